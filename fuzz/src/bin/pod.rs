//! Bytes as the object of a CREATE review (a Pod unless its `kind` says Job or CronJob), under a config
//! picked by the first byte.
fn main() {
    afl::fuzz!(|data: &[u8]| {
        let Some((&selector, body)) = data.split_first() else {
            return;
        };
        let Ok(object) = serde_json::from_slice::<serde_json::Value>(body) else {
            return;
        };
        entourage_fuzz::check(&entourage_fuzz::review_body(&object), &entourage_fuzz::config(selector));
    });
}
