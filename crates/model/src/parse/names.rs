//! Kubernetes' rules for object names and namespaces (apimachinery `IsDNS1123Subdomain` and
//! `IsDNS1123Label`). A key is `cluster/kind/namespace/name`: without these rules a namespace
//! `ns` with a name `a/b` and a namespace `ns/a` with a name `b` would be the same key, and a
//! gateway id (`cluster/namespace/name`) could not be split back.

pub(super) const MAX_SUBDOMAIN_LEN: usize = 253;
pub(super) const MAX_LABEL_LEN: usize = 63;

const SUBDOMAIN_RULE: &str = "a DNS-1123 subdomain must be at most 253 characters of lower case \
alphanumerics, '-' or '.', each '.'-separated part starting and ending with an alphanumeric \
(e.g. 'example.com')";
const LABEL_RULE: &str = "a DNS-1123 label must be at most 63 characters of lower case \
alphanumerics or '-', starting and ending with an alphanumeric (e.g. 'my-name', '123-abc')";

/// `None` if `s` is a DNS-1123 label, else the rule it breaks.
pub(super) fn label_error(s: &str) -> Option<&'static str> {
    let ok = s.len() <= MAX_LABEL_LEN && is_label_shaped(s);
    (!ok).then_some(LABEL_RULE)
}

/// `None` if `s` is a DNS-1123 subdomain, else the rule it breaks.
pub(super) fn subdomain_error(s: &str) -> Option<&'static str> {
    let ok = !s.is_empty() && s.len() <= MAX_SUBDOMAIN_LEN && s.split('.').all(is_label_shaped);
    (!ok).then_some(SUBDOMAIN_RULE)
}

/// The name rule of a ClusterTrustBundle (Kubernetes `ValidateClusterTrustBundleName`): with a
/// signer, `<signerName with '/' as ':'>:<subdomain>` (so `example.com/signer` names its bundles
/// `example.com:signer:...`); without one, a subdomain without ':'.
pub(super) fn cluster_trust_bundle_error(name: &str, signer: Option<&str>) -> Option<String> {
    match signer.filter(|s| !s.is_empty()) {
        None => subdomain_error(name).map(str::to_string),
        Some(signer) => {
            let prefix = format!("{}:", signer.replace('/', ":"));
            match name.strip_prefix(&prefix) {
                None => Some(format!(
                    "a ClusterTrustBundle of signer {signer:?} must be named with the prefix {prefix:?}"
                )),
                Some(rest) => subdomain_error(rest)
                    .map(|rule| format!("after the prefix {prefix:?}: {rule}")),
            }
        }
    }
}

/// Lower case alphanumerics and '-', starting and ending with an alphanumeric. The parts of a
/// subdomain have this shape but, unlike a label, no length limit of their own.
fn is_label_shaped(s: &str) -> bool {
    let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    let bytes = s.as_bytes();
    match (bytes.first(), bytes.last()) {
        (Some(&first), Some(&last)) => {
            alnum(first) && alnum(last) && bytes.iter().all(|&c| alnum(c) || c == b'-')
        }
        _ => false,
    }
}
