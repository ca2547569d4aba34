use super::*;

#[test]
fn containers_of_a_pod_share_its_shim() {
    let dir = crate::testfs::FakeDir::new("group", &[]);
    std::fs::write(
        dir.join("config.json"),
        r#"{"annotations":{"io.kubernetes.cri.sandbox-id":"pod1"}}"#,
    )
    .unwrap();
    assert_eq!(grouping(&dir, "c1"), "pod1");
    // A hostile sandbox id is ignored rather than turned into a path.
    std::fs::write(
        dir.join("config.json"),
        r#"{"annotations":{"io.kubernetes.cri.sandbox-id":"../../etc"}}"#,
    )
    .unwrap();
    assert_eq!(grouping(&dir, "c1"), "c1");
}

#[test]
fn socket_is_private_and_named_like_containerd_names_it() {
    let fake = crate::testfs::FakeDir::new("sock", &[]);
    let dir = fake.join("s");
    private_dir(&dir).unwrap();
    let p = socket_path(&dir, "/run/containerd/containerd.sock", "default", "c1");
    assert_eq!(p.parent().unwrap(), dir);
    assert_eq!(p.file_name().unwrap().len(), 64, "sha256 hex");
    let _l = bind_private(&p).unwrap();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&p), 0o600);
}
