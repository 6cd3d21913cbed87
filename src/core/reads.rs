//! What the core reads of an object: a tree of the members it looks at, declared next to the code that reads
//! them (`mutate::pod::READS`). The wire decoder (`review::pruned`) parses a request's object only this far.

/// Which parts of a JSON value to keep.
#[derive(Debug)]
pub enum Reads {
    /// The whole value.
    All,
    /// Of an object, these members (each with what to keep of it); every other member is skipped.
    Members(&'static [(&'static str, Reads)]),
    /// Of an array, every element, keeping this of each.
    Each(&'static Reads),
    /// Of an object, the members whose key starts with this prefix, each whole.
    Prefixed(&'static str),
    /// Of an object, the members whose key starts with any of these prefixes, each whole.
    Prefixes(&'static [&'static str]),
    /// Of an array, every element as [`Reads::Each`] of `Members([(key, All)])` keeps it, except objects whose
    /// `key` member is a string the decoder's [`Names`] does not ask for: those are left out.
    EachNamed(&'static str),
}

/// Which names a [`Reads::EachNamed`] keeps.
pub type Names<'n> = &'n dyn Fn(&str) -> bool;
