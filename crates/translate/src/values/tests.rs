use super::*;
use flotilla_model::Kind;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

fn nanos(s: &str) -> i64 {
    match parse_go_duration(s) {
        Ok(d) => d.as_nanos(),
        Err(e) => panic!("{s:?} refused: {e}"),
    }
}

fn err(s: &str) -> String {
    match parse_go_duration(s) {
        Ok(d) => panic!("{s:?} accepted as {} ns", d.as_nanos()),
        Err(e) => e.to_string(),
    }
}

const S: i64 = 1_000_000_000;

#[test]
fn durations_are_exact() {
    // f64 arithmetic gave 1,004,999,999 here.
    assert_eq!(nanos("1.005s"), 1_005_000_000);
    assert_eq!(nanos("1h30m"), 5_400 * S);
    assert_eq!(nanos("1h2m3s4ms5us6ns"), 3_723 * S + 4_005_006);
    assert_eq!(nanos("0"), 0);
    assert_eq!(nanos("0s"), 0);
    assert_eq!(nanos("1.5s"), 1_500_000_000);
    assert_eq!(nanos("250ms"), 250_000_000);
    assert_eq!(nanos(".5s"), 500_000_000);
    assert_eq!(nanos("1.s"), S);
    assert_eq!(nanos("1.5h"), 5_400 * S);
    // Both micro signs, as Go.
    assert_eq!(nanos("3\u{b5}s"), 3_000);
    assert_eq!(nanos("3\u{3bc}s"), 3_000);
    assert_eq!(nanos("3us"), 3_000);
    // A third of an hour, truncated to the nanosecond.
    assert_eq!(nanos("0.3333333333333h"), 1_199_999_999_999);
    // Fraction digits beyond u64 precision are consumed and ignored, as Go does.
    assert_eq!(nanos("1.0000000000000000000000001s"), S);
    // Go's sign.
    assert_eq!(nanos("-1.5s"), -1_500_000_000);
    assert_eq!(nanos("+2m"), 120 * S);
}

#[test]
fn durations_up_to_go_limits() {
    // Go's largest and smallest Duration.
    assert_eq!(nanos("9223372036854775807ns"), i64::MAX);
    assert_eq!(nanos("-9223372036854775808ns"), i64::MIN);
    assert_eq!(nanos("2562047h47m16.854775807s"), i64::MAX);
    // One past them.
    assert_eq!(
        err("9223372036854775808ns"),
        "time: invalid duration \"9223372036854775808ns\""
    );
    assert_eq!(
        err("2562047h47m16.854775808s"),
        "time: invalid duration \"2562047h47m16.854775808s\""
    );
}

#[test]
fn overflow_is_refused_not_wrapped() {
    assert_eq!(
        err("9999999999999h"),
        "time: invalid duration \"9999999999999h\""
    );
    // Digits alone overflow u64.
    err("99999999999999999999999s");
    // Each component fits, the sum does not (Go's u64 sum wraps to 0 here; ours is refused).
    err("9223372036854775808ns9223372036854775808ns");
    err("2562047h2562047h");
}

#[test]
fn beyond_envoys_maximum_is_refused() {
    // Envoy's bound, 10,000 years, is 87,660,000 hours; Go's bound is far below it, so the
    // parser refuses it as an overflow.
    assert_eq!(err("87660001h"), "time: invalid duration \"87660001h\"");
    let max = parse_go_duration("2562047h47m16.854775807s")
        .map(GoDuration::to_proto)
        .unwrap();
    assert!(max.seconds <= ENVOY_MAX_DURATION_SECONDS);
}

#[test]
fn garbage_reads_like_go() {
    assert_eq!(err("1x"), "time: unknown unit \"x\" in duration \"1x\"");
    assert_eq!(
        err("5sec"),
        "time: unknown unit \"sec\" in duration \"5sec\""
    );
    assert_eq!(err(".s"), "time: invalid duration \".s\"");
    assert_eq!(err("s"), "time: invalid duration \"s\"");
    assert_eq!(err(""), "time: invalid duration \"\"");
    assert_eq!(err("-"), "time: invalid duration \"-\"");
    assert_eq!(err("1"), "time: missing unit in duration \"1\"");
    assert_eq!(err("1h1"), "time: missing unit in duration \"1h1\"");
    assert_eq!(err("1s "), "time: unknown unit \"s \" in duration \"1s \"");
    assert_eq!(err(" 1s"), "time: invalid duration \" 1s\"");
    assert_eq!(err("abc"), "time: invalid duration \"abc\"");
    assert_eq!(
        err("1\u{e9}"),
        "time: unknown unit \"\\xc3\\xa9\" in duration \"1\\xc3\\xa9\""
    );
    assert_eq!(err("\"1\""), "time: invalid duration \"\\\"1\\\"\"");
}

#[test]
fn gateway_durations_take_no_sign() {
    assert_eq!(
        parse_gateway_duration("1.005s").map(GoDuration::as_nanos),
        Ok(1_005_000_000)
    );
    assert_eq!(parse_gateway_duration("0").map(GoDuration::as_nanos), Ok(0));
    for s in ["-1s", "+1s", "-0"] {
        assert!(
            matches!(parse_gateway_duration(s), Err(Error::Signed { .. })),
            "{s}"
        );
    }
    assert_eq!(
        parse_gateway_duration("1x").map_err(|e| e.to_string()),
        Err("time: unknown unit \"x\" in duration \"1x\"".to_string())
    );
}

#[test]
fn proto_form_keeps_one_sign() {
    let p = GoDuration::from_nanos(1_005_000_000).to_proto();
    assert_eq!((p.seconds, p.nanos), (1, 5_000_000));
    let p = GoDuration::from_nanos(-1_500_000_000).to_proto();
    assert_eq!((p.seconds, p.nanos), (-1, -500_000_000));
    let p = GoDuration::from_nanos(i64::MIN).to_proto();
    assert_eq!((p.seconds, p.nanos), (-9_223_372_036, -854_775_808));
    assert!(GoDuration::default().is_zero());
}

fn meta(created: Option<&str>) -> ObjectMeta {
    ObjectMeta {
        creation_timestamp: created.map(|t| Time(t.parse().unwrap())),
        ..Default::default()
    }
}

fn key(ns: &str, name: &str) -> ResourceKey {
    ResourceKey::new("c1", Kind::HTTPRoute, ns, name)
}

#[test]
fn ages_compare_as_instants() {
    let (ka, kb) = (key("ns", "a"), key("ns", "b"));
    // As text "…45.5Z" < "…45Z"; as times it is half a second younger.
    let whole = meta(Some("2024-01-01T00:00:45Z"));
    let half = meta(Some("2024-01-01T00:00:45.5Z"));
    assert!(Age::of(&whole, &kb) < Age::of(&half, &ka));
    // The same instant written two ways is the same age: the name decides.
    let offset = meta(Some("2024-01-01T01:00:45+01:00"));
    assert!(Age::of(&offset, &ka) < Age::of(&whole, &kb));
    assert!(Age::of(&whole, &ka) < Age::of(&offset, &kb));
}

#[test]
fn missing_timestamps_are_oldest_then_namespace_slash_name() {
    let none = meta(None);
    let old = meta(Some("1970-01-01T00:00:00Z"));
    assert!(Age::of(&none, &key("z", "z")) < Age::of(&old, &key("a", "a")));
    // Go's zero time written out is the same age as no time at all.
    let zero = meta(Some("0001-01-01T00:00:00Z"));
    assert_eq!(
        Age::of(&none, &key("a", "a")),
        Age::of(&zero, &key("a", "a"))
    );
    // "a-b/x" < "a/x" as one string ('-' < '/'), though "a" < "a-b" as a namespace.
    assert!(Age::of(&none, &key("a-b", "x")) < Age::of(&none, &key("a", "x")));
    assert!(Age::of(&none, &key("a", "x")) < Age::of(&none, &key("a", "y")));
    assert!(Age::of(&none, &key("a", "x")) < Age::of(&none, &key("b", "a")));
}

#[test]
fn quantities_parse_with_kubernetes_suffixes() {
    assert_eq!(parse_quantity("1Ki"), Some(1024.0));
    assert_eq!(parse_quantity("8192Ki"), Some(8_388_608.0));
    assert_eq!(parse_quantity("100G"), Some(1e11));
    assert_eq!(parse_quantity("1.5M"), Some(1_500_000.0));
    assert_eq!(parse_quantity("512"), Some(512.0));
    assert_eq!(parse_quantity("100m"), Some(0.1));
    assert_eq!(parse_quantity("1e3"), Some(1000.0));
    assert_eq!(parse_quantity("10mib"), None);
    assert_eq!(parse_quantity(""), None);
}

#[test]
fn regex_errors_read_like_go() {
    let e = check_regex("*regex*").unwrap_err();
    assert_eq!(
        e,
        "regex \"*regex*\" is invalid: error parsing regexp: missing argument to repetition operator: `*`"
    );
    assert!(check_regex("^/v[0-9]+/.*").is_ok());
    assert!(check_regex("a+?b*?c{2}?").is_ok());
    assert!(check_regex("[*+]+").is_ok());
    assert!(check_regex(r"\*+").is_ok());
    assert_eq!(
        check_regex("\"([a-z]+)\"*+?").unwrap_err(),
        "regex \"\\\"([a-z]+)\\\"*+?\" is invalid: error parsing regexp: invalid nested repetition operator: `*+`"
    );
}
