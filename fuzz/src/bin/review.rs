//! Raw bytes as a request body: decoding never panics, and whatever decodes gets a safe answer.
fn main() {
    afl::fuzz!(|data: &[u8]| {
        let Some((&selector, body)) = data.split_first() else {
            return;
        };
        if let Ok(review) = entourage::admission::decode(body) {
            entourage_fuzz::check(&review.request, &entourage_fuzz::config(selector));
        }
    });
}
