use super::*;

fn mk_rule(entries: &[(&str, Option<&str>)], rpu: u32) -> Rule {
    Rule {
        descriptor: entries
            .iter()
            .map(|(k, v)| EntryMatch {
                key: k.to_string(),
                value: v.map(str::to_string),
            })
            .collect(),
        limit: Limit {
            requests_per_unit: rpu,
            unit: Unit::Minute,
        },
        shadow_mode: false,
        name: None,
    }
}

fn mk_config(domain: &str, rules: Vec<Rule>) -> RateLimitConfig {
    RateLimitConfig {
        domains: vec![DomainConfig {
            domain: domain.into(),
            rules,
        }],
    }
}

fn limit_of(rules: &Rules, domain: &str, entries: &[(&str, &str)]) -> Option<u32> {
    rules
        .find(domain, entries)
        .map(|r| r.limit.requests_per_unit)
}

#[test]
fn most_specific_rule_wins() {
    let rules = Rules::compile(&mk_config(
        "d",
        vec![
            mk_rule(&[("route", Some("r1")), ("user", None)], 10),
            mk_rule(&[("route", Some("r1")), ("user", Some("vip"))], 100),
            mk_rule(&[("route", Some("r1")), ("user", Some("bot*"))], 1),
            mk_rule(&[("route", None), ("user", Some("vip"))], 50),
        ],
    ))
    .expect("valid");
    assert_eq!(
        limit_of(&rules, "d", &[("route", "r1"), ("user", "vip")]),
        Some(100)
    );
    assert_eq!(
        limit_of(&rules, "d", &[("route", "r1"), ("user", "bot-7")]),
        Some(1)
    );
    assert_eq!(
        limit_of(&rules, "d", &[("route", "r1"), ("user", "alice")]),
        Some(10)
    );
    // The first entry weighs more: exact route + any user beats any route + exact user.
    assert_eq!(
        limit_of(&rules, "d", &[("route", "r2"), ("user", "vip")]),
        Some(50)
    );
    assert_eq!(
        limit_of(&rules, "d", &[("route", "r2"), ("user", "alice")]),
        None
    );
    // Whole descriptors only: a prefix or a longer descriptor has no limit (as the reference).
    assert_eq!(limit_of(&rules, "d", &[("route", "r1")]), None);
    assert_eq!(
        limit_of(&rules, "d", &[("route", "r1"), ("user", "vip"), ("x", "y")]),
        None
    );
    assert_eq!(
        limit_of(&rules, "other", &[("route", "r1"), ("user", "vip")]),
        None
    );
    // Keys must match in order.
    assert_eq!(
        limit_of(&rules, "d", &[("user", "vip"), ("route", "r1")]),
        None
    );
}

#[test]
fn longer_prefix_is_more_specific() {
    let rules = Rules::compile(&mk_config(
        "d",
        vec![
            mk_rule(&[("k", Some("a*"))], 1),
            mk_rule(&[("k", Some("ab*"))], 2),
        ],
    ))
    .expect("valid");
    assert_eq!(limit_of(&rules, "d", &[("k", "abc")]), Some(2));
    assert_eq!(limit_of(&rules, "d", &[("k", "ax")]), Some(1));
}

#[test]
fn all_errors_reported_at_once() {
    let mut cfg = mk_config(
        "d",
        vec![
            mk_rule(&[], 1),
            mk_rule(&[("", Some("v"))], 1),
            mk_rule(&[("k", Some("v"))], 1),
            mk_rule(&[("k", Some("v"))], 2),
        ],
    );
    cfg.domains.push(DomainConfig {
        domain: "d".into(),
        rules: vec![],
    });
    let errs = Rules::compile(&cfg).expect_err("invalid");
    assert_eq!(errs.0.len(), 4, "{errs}");
    assert!(
        errs.to_string().contains("domains[0](d).rules[3]"),
        "{errs}"
    );
}

#[test]
fn serde_form_reads_as_documented() {
    let yaml = r#"
domains:
  - domain: gw-listener
    rules:
      - descriptor:
          - {key: ns/route, value: ns/route}
          - {key: rule-0-match-0}
        limit: {requests_per_unit: 5, unit: minute}
        shadow_mode: true
"#;
    let cfg: RateLimitConfig = serde_yaml_ng::from_str(yaml).expect("parses");
    let rules = Rules::compile(&cfg).expect("valid");
    let r = rules
        .find(
            "gw-listener",
            &[("ns/route", "ns/route"), ("rule-0-match-0", "x")],
        )
        .expect("matches");
    assert!(r.shadow_mode);
    assert_eq!(r.limit.unit, Unit::Minute);
}

#[test]
fn windows_are_epoch_aligned() {
    assert_eq!(
        Unit::Second.window(100),
        Window {
            start: 100,
            end: 101
        }
    );
    assert_eq!(
        Unit::Minute.window(119),
        Window {
            start: 60,
            end: 120
        }
    );
    assert_eq!(
        Unit::Minute.window(120),
        Window {
            start: 120,
            end: 180
        }
    );
    assert_eq!(
        Unit::Hour.window(7199),
        Window {
            start: 3600,
            end: 7200
        }
    );
    assert_eq!(
        Unit::Day.window(86_401),
        Window {
            start: 86_400,
            end: 172_800
        }
    );
    assert_eq!(Unit::Minute.window(119).remaining(119), 1);
    assert_eq!(Unit::Minute.window(60).remaining(60), 60);
}
