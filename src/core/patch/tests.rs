//! Unit tests of the parent module.

use super::*;
use serde_json::json;

fn apply(doc: &Value, patch: &Patch) -> Value {
    let mut out = doc.clone();
    json_patch::patch(&mut out, &patch.to_json_patch()).expect("patch applies");
    out
}

#[test]
fn creates_missing_annotations_map_in_one_add() {
    let doc = json!({"metadata": {"name": "p"}});
    let mut b = PatchBuilder::new(&doc);
    b.set_annotation(&[key("metadata")], "entourage.dev/status", "x");
    b.set_annotation(&[key("metadata")], "entourage.dev/defaulted", "y");
    let patch = b.finish();
    assert_eq!(patch.0.len(), 1);
    let out = apply(&doc, &patch);
    assert_eq!(
        out["metadata"]["annotations"],
        json!({"entourage.dev/status": "x", "entourage.dev/defaulted": "y"})
    );
}

#[test]
fn patch_text_is_what_serde_writes() {
    let doc = json!({"metadata": {"annotations": {"a/b": "x"}}, "spec": {"containers": [{"name": "app"}]}});
    let mut b = PatchBuilder::new(&doc);
    b.set_annotation(&[key("metadata")], "a/b", "new \"quoted\" ~ value");
    b.add_serialized(&[key("spec"), key("containers"), Step::End], &json!({"name": "é\n"}));
    b.add(&[key("spec"), key("volumes"), Step::End], json!({"name": "v"}));
    let patch = b.finish();
    assert_eq!(patch.0.len(), 3);
    assert_eq!(patch.to_json(), serde_json::to_vec(&patch).unwrap());
    assert_eq!(Patch::default().to_json(), b"[]");
}

#[test]
fn pointers_from_steps_and_from_tokens_are_the_same() {
    let paths: [&[Step<'_>]; 4] = [
        &[key("spec"), key("containers"), Step::Index(12), key("env"), Step::End],
        &[key("metadata"), key("annotations"), key("entourage.dev/status")],
        &[key("a~b/c~1"), key(""), Step::Index(0), key("ü/~")],
        &[],
    ];
    for path in paths {
        let tokens: Vec<String> = path.iter().map(step_token).collect();
        assert_eq!(pointer_to(path), pointer(&tokens));
    }
    assert_eq!(pointer_to(paths[2]), "/a~0b~1c~01//0/ü~1~0");
}

#[test]
fn escapes_slash_and_tilde_in_keys() {
    let doc = json!({"metadata": {"annotations": {}}});
    let mut b = PatchBuilder::new(&doc);
    b.set_annotation(&[key("metadata")], "a~b/c", "v");
    let patch = b.finish();
    assert_eq!(
        serde_json::to_value(&patch).unwrap()[0]["path"],
        json!("/metadata/annotations/a~0b~1c")
    );
    assert_eq!(apply(&doc, &patch)["metadata"]["annotations"]["a~b/c"], json!("v"));
}

#[test]
fn appends_to_existing_array_and_creates_missing_one() {
    let doc = json!({"spec": {"containers": [{"name": "app"}]}});
    let mut b = PatchBuilder::new(&doc);
    b.add(&[key("spec"), key("containers"), Step::End], json!({"name": "s1"}));
    b.add(&[key("spec"), key("volumes"), Step::End], json!({"name": "v1"}));
    b.add(&[key("spec"), key("volumes"), Step::End], json!({"name": "v2"}));
    let patch = b.finish();
    assert_eq!(patch.0.len(), 2);
    let out = apply(&doc, &patch);
    assert_eq!(out["spec"]["containers"][1]["name"], "s1");
    assert_eq!(out["spec"]["volumes"], json!([{"name": "v1"}, {"name": "v2"}]));
}

#[test]
fn inserts_at_the_front_in_order() {
    let doc = json!({"spec": {"initContainers": [{"name": "user-init"}]}});
    let mut b = PatchBuilder::new(&doc);
    b.add(
        &[key("spec"), key("initContainers"), Step::Index(0)],
        json!({"name": "a"}),
    );
    b.add(
        &[key("spec"), key("initContainers"), Step::Index(1)],
        json!({"name": "b"}),
    );
    let out = apply(&doc, &b.finish());
    let names: Vec<_> = out["spec"]["initContainers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].clone())
        .collect();
    assert_eq!(names, vec![json!("a"), json!("b"), json!("user-init")]);
}

#[test]
fn adds_under_a_created_array_element() {
    let doc = json!({"spec": {"containers": [{"name": "app"}]}});
    let mut b = PatchBuilder::new(&doc);
    b.add(
        &[
            key("spec"),
            key("containers"),
            Step::Index(0),
            key("volumeMounts"),
            Step::End,
        ],
        json!({"name": "m1"}),
    );
    b.add(
        &[
            key("spec"),
            key("containers"),
            Step::Index(0),
            key("volumeMounts"),
            Step::End,
        ],
        json!({"name": "m2"}),
    );
    let patch = b.finish();
    assert_eq!(patch.0.len(), 1);
    assert_eq!(
        apply(&doc, &patch)["spec"]["containers"][0]["volumeMounts"],
        json!([{"name": "m1"}, {"name": "m2"}])
    );
}

#[test]
fn set_replaces_existing_value_and_leaves_neighbours_alone() {
    let doc = json!({"spec": {"backoffLimit": 6, "futureField": {"x": 1}}});
    let mut b = PatchBuilder::new(&doc);
    b.set(&[key("spec"), key("backoffLimit")], json!(3));
    let patch = b.finish();
    assert_eq!(serde_json::to_value(&patch).unwrap()[0]["op"], "replace");
    assert_eq!(
        apply(&doc, &patch),
        json!({"spec": {"backoffLimit": 3, "futureField": {"x": 1}}})
    );
}

#[test]
fn never_adds_under_a_parent_of_the_wrong_type() {
    let doc = json!({"metadata": {"annotations": "not-a-map"}});
    let mut b = PatchBuilder::new(&doc);
    b.set_annotation(&[key("metadata")], "k", "v");
    assert!(b.is_empty());
}

#[test]
fn creates_metadata_when_absent() {
    let doc = json!({"spec": {}});
    let mut b = PatchBuilder::new(&doc);
    b.set_annotation(&[key("metadata")], "k", "v");
    assert_eq!(apply(&doc, &b.finish())["metadata"], json!({"annotations": {"k": "v"}}));
}

#[test]
fn serialised_elements_into_a_missing_array_make_the_same_patch_as_values() {
    // Native sidecars into a Pod without initContainers: the array is created once, its elements kept as text.
    #[derive(serde::Serialize)]
    struct Container {
        name: &'static str,
        image: &'static str,
    }
    let doc = json!({"spec": {"containers": [{"name": "app"}]}});
    let init = |i: usize| [key("spec"), key("initContainers"), Step::Index(i)];
    let steps: [(usize, Container); 3] = [
        (0, Container { name: "a", image: "x" }),
        (1, Container { name: "b", image: "y" }),
        (
            0,
            Container {
                name: "first",
                image: "z",
            },
        ),
    ];
    let mut text = PatchBuilder::new(&doc);
    let mut plain = PatchBuilder::new(&doc);
    for (i, c) in &steps {
        text.add_serialized(&init(*i), c);
        plain.add(&init(*i), serde_json::to_value(c).unwrap());
    }
    let (text, plain) = (text.finish(), plain.finish());
    assert_eq!(text.0.len(), 1, "one add creates the array");
    assert_eq!(text.0[0].path, "/spec/initContainers");
    assert_eq!(apply(&doc, &text), apply(&doc, &plain));
    assert_eq!(
        apply(&doc, &text)["spec"]["initContainers"],
        json!([{"name": "first", "image": "z"}, {"name": "a", "image": "x"}, {"name": "b", "image": "y"}])
    );
    assert_eq!(text.to_json(), serde_json::to_vec(&text).unwrap());

    // A later addition under the created array (not a serialised element) is folded in as before.
    let mut mixed = PatchBuilder::new(&doc);
    mixed.add_serialized(&init(0), &steps[0].1);
    mixed.add(
        &[
            key("spec"),
            key("initContainers"),
            Step::Index(0),
            key("env"),
            Step::End,
        ],
        json!({"name": "E"}),
    );
    mixed.add_serialized(&init(1), &steps[1].1);
    let mixed = mixed.finish();
    assert_eq!(mixed.0.len(), 1);
    assert_eq!(
        apply(&doc, &mixed)["spec"]["initContainers"],
        json!([{"name": "a", "image": "x", "env": [{"name": "E"}]}, {"name": "b", "image": "y"}])
    );

    // An array missing under a missing object still goes the `Value` way, in one add.
    let bare = json!({"kind": "Pod"});
    let mut b = PatchBuilder::new(&bare);
    b.add_serialized(&init(0), &steps[0].1);
    let patch = b.finish();
    assert_eq!(patch.0[0].path, "/spec");
    assert_eq!(apply(&bare, &patch)["spec"]["initContainers"][0]["name"], "a");
}

#[test]
fn json_text_is_written_as_a_raw_value_writes_it() {
    let values = [
        json!({"name": "a/b~c", "args": ["--x", "\"quoted\" \u{1}"], "n": 1, "ok": true, "none": null}),
        json!("plain"),
        json!([]),
    ];
    for value in values {
        let raw = serde_json::value::to_raw_value(&value).unwrap();
        let text = JsonText::of(&value);
        assert_eq!(text.get(), raw.get());
        assert_eq!(
            serde_json::to_string(&text).unwrap(),
            serde_json::to_string(&raw).unwrap()
        );
    }
}

#[test]
fn strings_are_written_as_serde_json_writes_them() {
    for s in [
        "",
        "plain",
        "a/b~c",
        "\"quoted\"",
        "back\\slash",
        "tab\tnl\n\u{1}\u{1f}",
        "é ✓ \u{7f}",
        "{\"a\":[1]}",
    ] {
        let mut text = String::new();
        push_json_str(&mut text, s);
        assert_eq!(text, serde_json::to_string(s).unwrap());
        let mut bytes = b"x".to_vec();
        push_json_bytes(&mut bytes, s);
        assert_eq!(&bytes[1..], serde_json::to_string(s).unwrap().as_bytes());
    }
}

#[test]
fn an_annotation_set_as_text_is_the_op_a_value_would_make() {
    let status = r#"{"containers":["sidecar-a"],"mode":"native"}"#;
    for doc in [
        json!({"metadata": {"annotations": {"a": "1"}}}),
        json!({"metadata": {"annotations": {"entourage.dev/status": "old"}}}),
        json!({"metadata": {}}),
        json!({}),
    ] {
        let mut fast = PatchBuilder::new(&doc);
        fast.set_annotation(&[key("metadata")], "entourage.dev/status", status);
        let mut slow = PatchBuilder::new(&doc);
        let path = [key("metadata"), key("annotations"), key("entourage.dev/status")];
        slow.set(&path, Value::String(status.to_string()));
        let (fast, slow) = (fast.finish(), slow.finish());
        assert_eq!(fast, slow);
        assert_eq!(fast.to_json(), slow.to_json());
    }
}

#[test]
fn every_byte_that_needs_escaping_is_found_at_every_position() {
    for b in 0u8..128 {
        for len in 1..20 {
            for at in 0..len {
                let mut bytes = vec![b'a'; len];
                bytes[at] = b;
                // Some multi-byte UTF-8 around it too, whose bytes are all >= 0x80.
                let s = format!("é{}✓", std::str::from_utf8(&bytes).unwrap());
                let mut text = String::new();
                push_json_str(&mut text, &s);
                assert_eq!(text, serde_json::to_string(&s).unwrap(), "byte {b:#x} at {at} of {len}");
            }
        }
    }
}
