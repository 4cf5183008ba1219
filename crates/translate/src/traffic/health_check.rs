//! A cluster's active health checker (HTTP, TCP or gRPC), from the policy's settings.

use super::encode::{nanos, u32v};
use crate::ir::cluster::*;
use envoy_types::pb::envoy::config::core::v3::{health_check, HealthCheck};
use envoy_types::pb::envoy::r#type::v3::Int64Range;

fn payload(p: &Payload) -> health_check::Payload {
    health_check::Payload {
        payload: Some(match p {
            Payload::Text(t) => health_check::payload::Payload::Text(hex::encode(t.as_bytes())),
            Payload::Binary(b) => health_check::payload::Payload::Binary(b.clone()),
        }),
    }
}

pub(super) fn health_check(hc: &ActiveHealthCheck) -> HealthCheck {
    use envoy_types::pb::envoy::config::core::v3::RequestMethod;
    let checker = match &hc.kind {
        HealthCheckKind::Http {
            path,
            host,
            method,
            expected,
            retriable,
            response,
            request,
        } => health_check::HealthChecker::HttpHealthCheck(health_check::HttpHealthCheck {
            path: path.clone(),
            host: host.clone().unwrap_or_default(),
            method: match method.as_deref() {
                Some("HEAD") => RequestMethod::Head,
                Some("POST") => RequestMethod::Post,
                Some("PUT") => RequestMethod::Put,
                Some("DELETE") => RequestMethod::Delete,
                Some("OPTIONS") => RequestMethod::Options,
                Some("TRACE") => RequestMethod::Trace,
                Some("PATCH") => RequestMethod::Patch,
                _ => RequestMethod::MethodUnspecified,
            } as i32,
            expected_statuses: expected
                .iter()
                .map(|(a, b)| Int64Range {
                    start: i64::from(*a),
                    end: i64::from(*b),
                })
                .collect(),
            retriable_statuses: retriable
                .iter()
                .map(|(a, b)| Int64Range {
                    start: i64::from(*a),
                    end: i64::from(*b),
                })
                .collect(),
            receive: response.iter().map(payload).collect(),
            send: request.as_ref().map(payload),
            ..Default::default()
        }),
        HealthCheckKind::Tcp { send, receive } => {
            health_check::HealthChecker::TcpHealthCheck(health_check::TcpHealthCheck {
                send: send.as_ref().map(payload),
                receive: receive.iter().map(payload).collect(),
                ..Default::default()
            })
        }
        HealthCheckKind::Grpc { service } => {
            health_check::HealthChecker::GrpcHealthCheck(health_check::GrpcHealthCheck {
                service_name: service.clone().unwrap_or_default(),
                ..Default::default()
            })
        }
    };
    HealthCheck {
        timeout: Some(nanos(hc.timeout)),
        interval: Some(nanos(hc.interval)),
        initial_jitter: hc.initial_jitter.map(nanos),
        unhealthy_threshold: Some(u32v(hc.unhealthy_threshold)),
        healthy_threshold: Some(u32v(hc.healthy_threshold)),
        health_checker: Some(checker),
        ..Default::default()
    }
}
