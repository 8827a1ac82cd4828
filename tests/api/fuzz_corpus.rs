//! Replays the fuzzers' corpus (fuzz/corpus, seeds and any crash found,
//! kept as a file) through the same entry points as `cargo fuzz`.

fn replay(target: &str, check: fn(&[u8])) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        let outcome = std::panic::catch_unwind(|| check(&data));
        assert!(outcome.is_ok(), "{} panics", path.display());
        n += 1;
    }
    assert!(n >= 3, "the {target} corpus has {n} inputs");
}

#[test]
fn national_id_corpus() {
    replay("national_id", standby::fuzzing::national_id);
}

#[test]
fn availability_corpus() {
    replay("availability", standby::fuzzing::availability);
}

#[test]
fn registration_json_corpus() {
    replay("registration_json", standby::fuzzing::registration_json);
}
