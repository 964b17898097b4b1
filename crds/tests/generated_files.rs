//! The committed CRD YAML must be exactly what the types generate.

#[test]
fn committed_crds_match_the_types() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/crd");
    let mut stale = Vec::new();
    for (file, yaml) in evpn_crds::manifests::render_crds().expect("CRDs render") {
        let committed = std::fs::read_to_string(dir.join(&file)).unwrap_or_default();
        if committed != yaml {
            stale.push(file);
        }
    }
    assert!(
        stale.is_empty(),
        "config/crd is out of date with crds/src for {stale:?}: run `cargo run -p evpn-crds --bin crdgen` and commit the result"
    );
}
