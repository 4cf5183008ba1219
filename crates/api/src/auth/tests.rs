use super::*;

const A: &str = "0123456789abcdef0123456789abcdef";
const B: &str = "fedcba9876543210fedcba9876543210";

#[test]
fn parses_tokens_and_digests() {
    let text = format!(
        "# ops\n\nadmin alice {A}\n  reader ci sha256:{}  \n",
        hex::encode(token_digest(B))
    );
    let t = Tokens::parse(&text).expect("valid");
    assert_eq!(t.len(), 2);
    assert_eq!(
        t.authenticate(A),
        Some(&Principal {
            name: "alice".into(),
            role: Role::Admin
        })
    );
    assert_eq!(t.authenticate(B).map(|p| p.role), Some(Role::Reader));
    assert_eq!(t.authenticate("x"), None);
    assert_eq!(
        t.authenticate(&format!("sha256:{}", hex::encode(token_digest(B)))),
        None
    );
}

#[test]
fn every_problem_is_reported_with_its_line() {
    let text = format!(
        "admin alice {A}\nroot bob {B}\nreader carol short\nreader alice {B}x\nreader dan sha256:zz\nadmin eve\nreader frank {A}\n"
    );
    let errs = Tokens::parse(&text).expect_err("invalid");
    let lines: Vec<usize> = errs.iter().map(|e| e.line).collect();
    assert_eq!(lines, vec![2, 3, 4, 5, 6, 7], "{errs:?}");
    assert!(
        errs[0].message.contains("unknown role \"root\""),
        "{errs:?}"
    );
    assert!(errs[1].message.contains("at least 32"), "{errs:?}");
    assert!(
        errs[2].message.contains("already used on line 1"),
        "{errs:?}"
    );
    assert!(errs[3].message.contains("64 hex digits"), "{errs:?}");
    assert!(errs[4].message.contains("3 fields"), "{errs:?}");
    assert!(
        errs[5].message.contains("same token is already on line 1"),
        "{errs:?}"
    );
}

#[test]
fn a_bad_new_version_keeps_the_old_tokens() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("tokens");
    std::fs::write(&path, format!("admin alice {A}\n")).expect("write");
    let f = TokenFile::load(&path).expect("load");
    assert!(f.reload_if_changed().is_none(), "unchanged");
    std::fs::write(&path, format!("admin alice {A}\nwizard bob {B}\n")).expect("write");
    let e = f
        .reload_if_changed()
        .expect("changed")
        .expect_err("bad version");
    let msg = e.to_string();
    assert!(
        msg.contains(&format!("{}:2: unknown role", path.display())),
        "{msg}"
    );
    assert!(f.tokens().authenticate(A).is_some(), "the old set stays");
    assert!(f.reload_if_changed().is_none(), "reported once");
    std::fs::write(&path, format!("reader bob {B}\n")).expect("write");
    assert_eq!(f.reload_if_changed().expect("changed").expect("good"), 1);
    assert!(f.tokens().authenticate(A).is_none(), "alice is gone");
    assert!(f.tokens().authenticate(B).is_some());
}

#[test]
fn generated_tokens_are_long_random_and_their_line_parses() {
    let (a, b) = (generate_token(), generate_token());
    assert_eq!(a.len(), 64);
    assert_ne!(a, b);
    let line = token_line(Role::Admin, "ops", &a);
    assert!(!line.contains(&a), "the line holds no secret");
    let t = Tokens::parse(&line).expect("valid");
    assert_eq!(t.authenticate(&a).map(|p| p.name.as_str()), Some("ops"));
}
