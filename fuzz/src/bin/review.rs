//! Raw bytes as a request body: decoding never panics, and whatever decodes gets a safe answer.
fn main() {
    afl::fuzz!(|data: &[u8]| {
        let Some((&selector, body)) = data.split_first() else {
            return;
        };
        entourage_fuzz::check(body, &entourage_fuzz::config(selector));
    });
}
