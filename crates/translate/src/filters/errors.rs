//! The status errors a filter is refused with, in Envoy Gateway's reasons and condition types;
//! the ones that make the rule answer 500 set that direct response on the [`Filtered`].

use super::types::{DirectResponse, Filtered};
use crate::status::{CondType, StatusError};

pub(super) fn accepted(reason: &str, msg: impl Into<String>) -> StatusError {
    StatusError::new(CondType::Accepted, reason, msg)
}

pub(super) fn unsupported(msg: impl Into<String>) -> StatusError {
    accepted("UnsupportedValue", msg)
}

pub(super) fn invalid_filter(f: &mut Filtered, filter_type: &str, err: &str) -> StatusError {
    f.direct_response = Some(DirectResponse {
        status: 500,
        body: None,
    });
    unsupported(format!("invalid filter {filter_type}: {err}"))
}

pub(super) fn unsupported_filter(f: &mut Filtered, filter_type: &str) -> StatusError {
    f.direct_response = Some(DirectResponse {
        status: 500,
        body: None,
    });
    StatusError::new(
        CondType::ResolvedRefs,
        "UnsupportedValue",
        format!("unsupported filter type: {filter_type}"),
    )
}

pub(super) fn unresolved_filter(f: &mut Filtered, msg: String) -> StatusError {
    f.direct_response = Some(DirectResponse {
        status: 500,
        body: None,
    });
    StatusError::new(CondType::ResolvedRefs, "UnsupportedValue", msg)
}
