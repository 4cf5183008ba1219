use super::*;
use crate::tls::identity_of_cert;
use std::os::unix::fs::PermissionsExt;
use x509_parser::extensions::GeneralName;

fn id(role: Role, name: &str) -> Identity {
    Identity::new(role, name).expect("valid identity")
}

fn mode(p: &Path) -> u32 {
    fs::metadata(p).expect("metadata").permissions().mode() & 0o777
}

fn der(p: &Path) -> CertificateDer<'static> {
    CertificateDer::from_pem_file(p).expect("PEM certificate")
}

/// The DNS and IP SANs of a certificate, as strings.
fn host_sans(der: &[u8]) -> Vec<String> {
    let (_, cert) = X509Certificate::from_der(der).expect("x509");
    let san = cert
        .subject_alternative_name()
        .expect("san")
        .expect("has SANs");
    san.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::DNSName(d) => Some(d.to_string()),
            GeneralName::IPAddress(b) => match b.len() {
                4 => Some(IpAddr::from(<[u8; 4]>::try_from(*b).expect("v4")).to_string()),
                16 => Some(IpAddr::from(<[u8; 16]>::try_from(*b).expect("v6")).to_string()),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

#[test]
fn a_ca_is_made_once_and_loaded_afterwards() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca_dir = dir.path().join("pki");
    let ca = Ca::create(&ca_dir).expect("create");
    assert!(ca.created());
    assert_eq!(mode(&ca_dir), 0o700);
    assert_eq!(mode(&ca_dir.join(CA_KEY_FILE)), 0o600);
    assert_eq!(mode(&ca_dir.join(CA_CERT_FILE)) & 0o600, 0o600);
    let pem = fs::read(ca.cert_path()).expect("read");
    let key = fs::read(ca_dir.join(CA_KEY_FILE)).expect("read");

    let ca_der = der(ca.cert_path());
    let (_, x509) = X509Certificate::from_der(&ca_der).expect("x509");
    assert!(x509.is_ca());
    assert!(x509.subject().to_string().contains(CA_COMMON_NAME));
    let years = (x509.validity().not_after.to_datetime() - time::OffsetDateTime::now_utc())
        .whole_days()
        / 365;
    assert_eq!(years, 9, "ten years, less the hours since");

    let again = Ca::create(&ca_dir).expect("create again");
    assert!(!again.created(), "an existing CA is loaded, not replaced");
    assert_eq!(fs::read(again.cert_path()).expect("read"), pem);
    assert_eq!(fs::read(ca_dir.join(CA_KEY_FILE)).expect("read"), key);

    // What the loaded CA issues chains to the original certificate.
    let leaf = again
        .issue(&id(Role::Admin, "alice"), &[], 1, dir.path())
        .expect("issue");
    let leaf_der = der(&leaf.cert);
    let (_, leaf) = X509Certificate::from_der(&leaf_der).expect("x509");
    leaf.verify_signature(Some(x509.public_key()))
        .expect("signed by the CA");
    assert_eq!(leaf.issuer(), x509.subject());
}

#[test]
fn half_a_ca_or_a_foreign_key_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    Ca::create(&a).expect("a");
    Ca::create(&b).expect("b");

    fs::copy(b.join(CA_KEY_FILE), a.join(CA_KEY_FILE)).expect("copy");
    let err = Ca::load(&a)
        .expect_err("b's key does not sign for a")
        .to_string();
    assert!(
        err.contains("does not belong") && err.contains(CA_KEY_FILE),
        "{err}"
    );

    fs::remove_file(b.join(CA_KEY_FILE)).expect("rm");
    let before = fs::read(b.join(CA_CERT_FILE)).expect("read");
    let err = Ca::create(&b).expect_err("half a CA").to_string();
    assert!(
        err.contains("refusing") && err.contains(CA_KEY_FILE),
        "{err}"
    );
    assert_eq!(fs::read(b.join(CA_CERT_FILE)).expect("read"), before);
}

#[test]
fn a_leaf_carries_its_identity_hosts_and_usages() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::create(dir.path()).expect("ca");
    let out = dir.path().join("out");
    let proxy = id(Role::Proxy, "east/infra/public");
    let hosts: Vec<String> = ["gw.example", "127.0.0.1", "[::1]"]
        .map(String::from)
        .into();
    let p = ca.issue(&proxy, &hosts, 30, &out).expect("issue");

    assert_eq!(p.cert, out.join("proxy-east-infra-public.pem"));
    assert_eq!(p.key, out.join("proxy-east-infra-public.key"));
    assert_eq!(mode(&out), 0o700);
    assert_eq!(mode(&p.key), 0o600);
    let names: Vec<_> = fs::read_dir(&out)
        .expect("ls")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 2, "no temporary files left: {names:?}");

    let der = der(&p.cert);
    assert_eq!(identity_of_cert(&der), Ok(proxy));
    assert_eq!(host_sans(&der), ["gw.example", "127.0.0.1", "::1"]);
    let (_, x509) = X509Certificate::from_der(&der).expect("x509");
    assert!(!x509.is_ca());
    let eku = x509
        .extended_key_usage()
        .expect("eku")
        .expect("has EKU")
        .value;
    assert!(eku.server_auth && eku.client_auth);
    let days =
        (x509.validity().not_after.to_datetime() - time::OffsetDateTime::now_utc()).whole_days();
    assert_eq!(days, 29, "30 days, less the seconds since");
    assert!(x509.validity().not_before.to_datetime() < time::OffsetDateTime::now_utc());
}

#[test]
fn bad_hosts_and_lifetimes_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::create(dir.path()).expect("ca");
    let store = id(Role::Store, "1");
    let err = ca
        .issue(&store, &["not a host!".into()], 1, dir.path())
        .expect_err("bad host");
    assert!(err.to_string().contains("\"not a host!\""), "{err}");
    assert!(matches!(
        ca.issue(&store, &[], 0, dir.path()),
        Err(Error::Days)
    ));
    assert!(!dir.path().join("store-1.pem").exists());
}

#[test]
fn a_dev_set_is_written_in_one_call() {
    let dir = tempfile::tempdir().expect("tempdir");
    let set = DevSet {
        stores: vec!["1".into(), "2".into()],
        edges: vec!["east".into()],
        agents: vec!["east".into()],
        proxies: vec!["east/infra/public".into()],
        admins: vec!["alice".into()],
        readers: vec!["ci".into()],
        nats: Vec::new(),
        hosts: vec!["localhost".into(), "127.0.0.1".into()],
        days: 7,
    };
    let files = write_dev_set(dir.path(), &set).expect("dev set");
    let names: Vec<_> = files
        .iter()
        .map(|f| f.file_name().expect("name").to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        [
            "ca.pem",
            "store-1.pem",
            "store-1.key",
            "store-2.pem",
            "store-2.key",
            "edge-east.pem",
            "edge-east.key",
            "agent-east.pem",
            "agent-east.key",
            "proxy-east-infra-public.pem",
            "proxy-east-infra-public.key",
            "admin-alice.pem",
            "admin-alice.key",
            "reader-ci.pem",
            "reader-ci.key",
        ]
    );
    for (id, want_hosts) in [
        (id(Role::Store, "2"), true),
        (id(Role::Edge, "east"), true),
        (id(Role::Agent, "east"), false),
        (id(Role::Reader, "ci"), false),
    ] {
        let der = der(&dir.path().join(format!("{}.pem", file_stem(&id))));
        assert_eq!(identity_of_cert(&der).as_ref(), Ok(&id));
        let want: &[&str] = if want_hosts {
            &["localhost", "127.0.0.1"]
        } else {
            &[]
        };
        assert_eq!(host_sans(&der), want, "{id}");
    }

    // Run again: the CA stays, the leaves are reissued.
    let ca_before = fs::read(dir.path().join(CA_CERT_FILE)).expect("read");
    let leaf_before = fs::read(dir.path().join("store-1.pem")).expect("read");
    write_dev_set(dir.path(), &set).expect("again");
    assert_eq!(
        fs::read(dir.path().join(CA_CERT_FILE)).expect("read"),
        ca_before
    );
    assert_ne!(
        fs::read(dir.path().join("store-1.pem")).expect("read"),
        leaf_before
    );
}

#[test]
fn a_dev_set_with_bad_or_clashing_names_writes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clash = DevSet {
        proxies: vec!["a-b/c/d".into(), "a/b-c/d".into()],
        days: 1,
        ..DevSet::default()
    };
    let err = write_dev_set(dir.path(), &clash)
        .expect_err("clash")
        .to_string();
    assert!(err.contains("proxy-a-b-c-d"), "{err}");
    let bad = DevSet {
        proxies: vec!["east/infra".into()],
        days: 1,
        ..DevSet::default()
    };
    assert!(matches!(
        write_dev_set(dir.path(), &bad),
        Err(Error::Identity(_))
    ));
    assert_eq!(fs::read_dir(dir.path()).expect("ls").count(), 0);
}
