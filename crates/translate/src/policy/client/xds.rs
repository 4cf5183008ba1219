//! What ClientTrafficPolicy settings ([`ClientSettings`]) do to Envoy: the listener (socket
//! options, limits), its filter chains, the HTTP connection manager, the downstream TLS
//! context, QUIC and the routes of a listener whose policy cannot be used. The settings are
//! read and checked in [`crate::policy::client`]; this part only encodes them.

use crate::envoy::any;
use crate::ir::client::{ClientIp, ClientSettings, HeaderOp, RequestId, StrMatch};
use crate::values::GoDuration;
use envoy_types::pb::envoy::config::core::v3::{
    http1_protocol_options, socket_option, CidrRange, Http1ProtocolOptions, Http2ProtocolOptions,
    HttpProtocolOptions, SocketOption, TypedExtensionConfig,
};
use envoy_types::pb::envoy::config::listener::v3::{
    filter, listener_filter, Filter, Listener, ListenerFilter,
};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_connection_manager, http_filter, HttpConnectionManager, HttpFilter,
};
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::TcpProxy;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::subject_alt_name_matcher::SanType;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    tls_parameters, DownstreamTlsContext, TlsParameters,
};
use envoy_types::pb::google::protobuf::{BoolValue, UInt32Value, UInt64Value};

/// A route of a listener whose ClientTrafficPolicy cannot be used: answered 500, as Envoy
/// Gateway answers it (`translateClientTrafficPolicyForListener`), rather than served
/// without the policy (which may be what makes serving it safe, e.g. client certificates).
pub(crate) fn fail_closed(r: &mut envoy_types::pb::envoy::config::route::v3::Route) {
    use envoy_types::pb::envoy::config::route::v3::{route, DirectResponseAction};
    r.action = Some(route::Action::DirectResponse(DirectResponseAction {
        status: 500,
        ..Default::default()
    }));
    r.typed_per_filter_config.clear();
    r.request_headers_to_add.clear();
    r.request_headers_to_remove.clear();
}

/// The HTTP/3 flavour of an HTTPS filter chain's connection manager (Envoy Gateway's
/// `addHCMToXDSListener` for its QUIC listener).
pub(crate) fn http3_hcm(hcm: &mut HttpConnectionManager) {
    use envoy_types::pb::envoy::config::core::v3::Http3ProtocolOptions;
    hcm.codec_type = http_connection_manager::CodecType::Http3 as i32;
    hcm.http3_protocol_options = Some(Http3ProtocolOptions::default());
    // HTTP/1.1 upgrades do not exist in HTTP/3.
    hcm.upgrade_configs.clear();
}

/// The QUIC transport socket of an HTTP/3 filter chain: the chain's TLS context, ALPN `h3`.
pub(crate) fn quic_transport_socket(
    mut ctx: DownstreamTlsContext,
) -> envoy_types::pb::envoy::config::core::v3::TransportSocket {
    use envoy_types::pb::envoy::config::core::v3::{transport_socket, TransportSocket};
    use envoy_types::pb::envoy::extensions::transport_sockets::quic::v3::QuicDownstreamTransport;
    if let Some(c) = ctx.common_tls_context.as_mut() {
        c.alpn_protocols = vec!["h3".into()];
    }
    TransportSocket {
        name: "envoy.transport_sockets.quic".into(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(any(
            "type.googleapis.com/envoy.extensions.transport_sockets.quic.v3.QuicDownstreamTransport",
            &QuicDownstreamTransport {
                downstream_tls_context: Some(ctx),
                ..Default::default()
            },
        ))),
    }
}

/// The `alt-svc` header that tells HTTP/1.1 and HTTP/2 clients of a listener that HTTP/3 is
/// served on `port` (Envoy Gateway's `buildHTTP3AltSvcHeader`).
pub(crate) fn alt_svc_header(
    port: u32,
) -> envoy_types::pb::envoy::config::core::v3::HeaderValueOption {
    use envoy_types::pb::envoy::config::core::v3::{
        header_value_option::HeaderAppendAction, HeaderValue, HeaderValueOption,
    };
    HeaderValueOption {
        header: Some(HeaderValue {
            key: "alt-svc".into(),
            value: format!("h3=\":{port}\"; ma=86400"),
            ..Default::default()
        }),
        append_action: HeaderAppendAction::AppendIfExistsOrAdd as i32,
        ..Default::default()
    }
}

// Linux socket option numbers (Envoy Gateway writes the same constants).

pub(crate) const SOL_SOCKET: i64 = 1;

pub(crate) const SO_KEEPALIVE: i64 = 9;

pub(crate) const IPPROTO_TCP: i64 = 6;

pub(crate) const TCP_KEEPIDLE: i64 = 4;

pub(crate) const TCP_KEEPINTVL: i64 = 5;

pub(crate) const TCP_KEEPCNT: i64 = 6;

pub(crate) fn socket_option(description: &str, level: i64, name: i64, value: i64) -> SocketOption {
    SocketOption {
        description: description.to_string(),
        level,
        name,
        value: Some(socket_option::Value::IntValue(value)),
        // STATE_PREBIND: set on the listening socket, inherited by accepted ones.
        ..Default::default()
    }
}

/// The listener-level settings: keepalive socket options, the per-connection buffer limit and
/// the PROXY protocol listener filter (first: it reads the connection's first bytes).
pub(crate) fn apply_listener(s: &ClientSettings, l: &mut Listener) {
    if let Some(k) = &s.keepalive {
        l.socket_options
            .push(socket_option("tcp keepalive", SOL_SOCKET, SO_KEEPALIVE, 1));
        if let Some(p) = k.probes {
            l.socket_options.push(socket_option(
                "tcp keepalive probes",
                IPPROTO_TCP,
                TCP_KEEPCNT,
                p.into(),
            ));
        }
        if let Some(t) = k.idle_time {
            l.socket_options.push(socket_option(
                "tcp keepalive idle time",
                IPPROTO_TCP,
                TCP_KEEPIDLE,
                t.into(),
            ));
        }
        if let Some(t) = k.interval {
            l.socket_options.push(socket_option(
                "tcp keepalive interval",
                IPPROTO_TCP,
                TCP_KEEPINTVL,
                t.into(),
            ));
        }
    }
    if let Some(b) = s.buffer_limit {
        l.per_connection_buffer_limit_bytes = Some(UInt32Value { value: b });
    }
    if let Some(n) = s.max_accept_per_socket_event {
        l.max_connections_to_accept_per_socket_event = Some(UInt32Value { value: n });
    }
    if s.tls.ja3 || s.tls.ja4 {
        use envoy_types::pb::envoy::extensions::filters::listener::tls_inspector::v3::TlsInspector;
        let on = |b: bool| b.then_some(BoolValue { value: true });
        for f in l
            .listener_filters
            .iter_mut()
            .filter(|f| f.name == "envoy.filters.listener.tls_inspector")
        {
            f.config_type = Some(listener_filter::ConfigType::TypedConfig(any(
                "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector",
                &TlsInspector {
                    enable_ja3_fingerprinting: on(s.tls.ja3),
                    enable_ja4_fingerprinting: on(s.tls.ja4),
                    ..Default::default()
                },
            )));
        }
    }
    if let Some(allow_without) = s.proxy_protocol {
        use envoy_types::pb::envoy::extensions::filters::listener::proxy_protocol::v3::ProxyProtocol;
        l.listener_filters.insert(
            0,
            ListenerFilter {
                name: "envoy.filters.listener.proxy_protocol".into(),
                config_type: Some(listener_filter::ConfigType::TypedConfig(any(
                    "type.googleapis.com/envoy.extensions.filters.listener.proxy_protocol.v3.ProxyProtocol",
                    &ProxyProtocol {
                        allow_requests_without_proxy_protocol: allow_without,
                        ..Default::default()
                    },
                ))),
                ..Default::default()
            },
        );
    }
}

/// The network filters of one filter chain: the connection limit goes before the others.
pub(crate) fn apply_chain_filters(
    s: &ClientSettings,
    stat_prefix: &str,
    filters: &mut Vec<Filter>,
) {
    use envoy_types::pb::envoy::extensions::filters::network::connection_limit::v3::ConnectionLimit as Cl;
    if let Some(c) = &s.connection_limit {
        let cl = Cl {
            stat_prefix: stat_prefix.to_string(),
            max_connections: Some(UInt64Value { value: c.max }),
            delay: c.close_delay.map(GoDuration::to_proto),
            ..Default::default()
        };
        filters.insert(
            0,
            Filter {
                name: "envoy.filters.network.connection_limit".into(),
                config_type: Some(filter::ConfigType::TypedConfig(any(
                    "type.googleapis.com/envoy.extensions.filters.network.connection_limit.v3.ConnectionLimit",
                    &cl,
                ))),
            },
        );
    }
}

/// A TCP proxy's idle timeout (`timeout.tcp.idleTimeout`).
pub(crate) fn apply_tcp_proxy(s: &ClientSettings, tp: &mut TcpProxy) {
    if let Some(d) = s.tcp_idle_timeout {
        tp.idle_timeout = Some(d.to_proto());
    }
}

/// Envoy Gateway's HTTP/2 defaults for downstream connections (`http2ProtocolOptions`).
pub(crate) const HTTP2_MAX_CONCURRENT_STREAMS: u32 = 100;

pub(crate) const HTTP2_INITIAL_STREAM_WINDOW: u32 = 65_536;

pub(crate) const HTTP2_INITIAL_CONNECTION_WINDOW: u32 = 1_048_576;

pub(crate) const HEALTH_CHECK_FILTER: &str = "envoy.filters.http.health_check";

pub(crate) const ROUTER_FILTER: &str = "envoy.filters.http.router";

pub(crate) const LATE_HEADERS_FILTER: &str =
    "envoy.filters.http.header_mutation/late-response-headers";

/// The HTTP connection manager, as Envoy Gateway configures it for a listener with this policy.
pub(crate) fn apply_hcm(s: &ClientSettings, hcm: &mut HttpConnectionManager) {
    let common = hcm
        .common_http_protocol_options
        .get_or_insert_with(HttpProtocolOptions::default);
    common.headers_with_underscores_action = s.with_underscores as i32;
    if let Some(d) = s.http_idle_timeout {
        common.idle_timeout = Some(d.to_proto());
    }
    if let Some(d) = s.request_timeout {
        hcm.request_timeout = Some(d.to_proto());
    }
    if let Some(d) = s.stream_idle_timeout {
        hcm.stream_idle_timeout = Some(d.to_proto());
    }
    if let Some(d) = s.request_headers_timeout {
        hcm.request_headers_timeout = Some(d.to_proto());
    }
    if let Some(kb) = s.max_request_headers_kb {
        hcm.max_request_headers_kb = Some(UInt32Value { value: kb });
    }

    // Client address: Envoy Gateway trusts the connection's peer, and X-Forwarded-For hops or
    // an original IP detection extension when configured (which replace the peer address).
    hcm.use_remote_address = Some(BoolValue { value: true });
    match &s.client_ip {
        Some(ClientIp::Xff { hops }) => hcm.xff_num_trusted_hops = *hops,
        Some(ClientIp::XffTrusted { cidrs }) => {
            hcm.use_remote_address = Some(BoolValue { value: false });
            hcm.original_ip_detection_extensions = vec![TypedExtensionConfig {
                name: "envoy.extensions.http.original_ip_detection.xff".into(),
                typed_config: Some(any(
                    "type.googleapis.com/envoy.extensions.http.original_ip_detection.xff.v3.XffConfig",
                    &XffConfig {
                        xff_trusted_cidrs: Some(XffTrustedCidrs {
                            cidrs: cidrs
                                .iter()
                                .map(|(ip, len)| CidrRange {
                                    address_prefix: ip.clone(),
                                    prefix_len: Some(UInt32Value { value: *len }),
                                })
                                .collect(),
                        }),
                        ..Default::default()
                    },
                )),
            }];
        }
        Some(ClientIp::Header { name, fail_closed }) => {
            use envoy_types::pb::envoy::extensions::http::original_ip_detection::custom_header::v3::CustomHeaderConfig;
            use envoy_types::pb::envoy::r#type::v3::{HttpStatus, StatusCode};
            hcm.use_remote_address = Some(BoolValue { value: false });
            hcm.original_ip_detection_extensions = vec![TypedExtensionConfig {
                name: "envoy.extensions.http.original_ip_detection.custom_header".into(),
                typed_config: Some(any(
                    "type.googleapis.com/envoy.extensions.http.original_ip_detection.custom_header.v3.CustomHeaderConfig",
                    &CustomHeaderConfig {
                        header_name: name.clone(),
                        allow_extension_to_set_address_as_trusted: true,
                        reject_with_status: fail_closed.then_some(HttpStatus {
                            code: StatusCode::Forbidden as i32,
                        }),
                    },
                )),
            }];
        }
        None => {}
    }

    if s.scheme_match_backend {
        hcm.scheme_header_transformation = Some(
            envoy_types::pb::envoy::config::core::v3::SchemeHeaderTransformation {
                match_upstream: true,
                ..Default::default()
            },
        );
    }
    hcm.skip_xff_append = s.skip_xff_append;
    hcm.strip_trailing_host_dot = s.strip_trailing_host_dot;
    match s.request_id {
        Some(RequestId::PreserveOrGenerate) => {
            hcm.preserve_external_request_id = true;
            hcm.generate_request_id = Some(BoolValue { value: true });
        }
        Some(RequestId::Preserve) => {
            hcm.preserve_external_request_id = true;
            hcm.generate_request_id = Some(BoolValue { value: false });
        }
        Some(RequestId::Generate) => {
            hcm.generate_request_id = Some(BoolValue { value: true });
        }
        Some(RequestId::Disable) => {
            hcm.generate_request_id = Some(BoolValue { value: false });
        }
        None => {}
    }
    if let Some(x) = &s.xfcc {
        hcm.forward_client_cert_details = x.mode as i32;
        if !x.details.is_empty() {
            let has = |d: &str| x.details.iter().any(|x| x == d);
            hcm.set_current_client_cert_details =
                Some(http_connection_manager::SetCurrentClientCertDetails {
                    subject: has("Subject").then_some(BoolValue { value: true }),
                    cert: has("Cert"),
                    chain: has("Chain"),
                    dns: has("DNS"),
                    uri: has("URI"),
                    ..Default::default()
                });
        }
    }

    hcm.normalize_path = Some(BoolValue { value: true });
    hcm.merge_slashes = s.merge_slashes;
    hcm.path_with_escaped_slashes_action = s.escaped_slashes as i32;

    if let Some(h1) = &s.http1 {
        let mut o = Http1ProtocolOptions {
            enable_trailers: h1.trailers,
            accept_http_10: h1.http10,
            default_host_for_http_10: h1.default_host.clone().unwrap_or_default(),
            ignore_http_11_upgrade: h1.ignored_upgrades.iter().map(string_matcher).collect(),
            ..Default::default()
        };
        if h1.preserve_case {
            use envoy_types::pb::envoy::extensions::http::header_formatters::preserve_case::v3::PreserveCaseFormatterConfig;
            o.header_key_format = Some(http1_protocol_options::HeaderKeyFormat {
                header_format: Some(
                    http1_protocol_options::header_key_format::HeaderFormat::StatefulFormatter(
                        TypedExtensionConfig {
                            name: "preserve_case".into(),
                            typed_config: Some(any(
                                "type.googleapis.com/envoy.extensions.http.header_formatters.preserve_case.v3.PreserveCaseFormatterConfig",
                                &PreserveCaseFormatterConfig::default(),
                            )),
                        },
                    ),
                ),
            });
        }
        hcm.http_protocol_options = Some(o);
    }
    let h2 = &s.http2;
    hcm.http2_protocol_options = Some(Http2ProtocolOptions {
        max_concurrent_streams: Some(UInt32Value {
            value: h2.max_streams.unwrap_or(HTTP2_MAX_CONCURRENT_STREAMS),
        }),
        initial_stream_window_size: Some(UInt32Value {
            value: h2.stream_window.unwrap_or(HTTP2_INITIAL_STREAM_WINDOW),
        }),
        initial_connection_window_size: Some(UInt32Value {
            value: h2
                .connection_window
                .unwrap_or(HTTP2_INITIAL_CONNECTION_WINDOW),
        }),
        override_stream_error_on_invalid_http_message: h2
            .reset_stream_on_error
            .map(|value| BoolValue { value }),
        ..Default::default()
    });

    // gRPC-Web is translated just before routing.
    if s.grpc_web {
        use envoy_types::pb::envoy::extensions::filters::http::grpc_web::v3::GrpcWeb;
        let at = hcm
            .http_filters
            .iter()
            .position(|f| f.name == ROUTER_FILTER)
            .unwrap_or(hcm.http_filters.len());
        hcm.http_filters.insert(
            at,
            HttpFilter {
                name: "envoy.filters.http.grpc_web".into(),
                config_type: Some(http_filter::ConfigType::TypedConfig(any(
                    "type.googleapis.com/envoy.extensions.filters.http.grpc_web.v3.GrpcWeb",
                    &GrpcWeb::default(),
                ))),
                ..Default::default()
            },
        );
    }
    // The router adds x-envoy-* headers only when the policy enables them.
    if !s.enable_envoy_headers {
        use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
        if let Some(r) = hcm
            .http_filters
            .iter_mut()
            .find(|f| f.name == ROUTER_FILTER)
        {
            r.config_type = Some(http_filter::ConfigType::TypedConfig(any(
                "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router",
                &Router {
                    suppress_envoy_headers: true,
                    ..Default::default()
                },
            )));
        }
    }
    if !s.early_request_headers.is_empty() {
        use envoy_types::pb::envoy::extensions::http::early_header_mutation::header_mutation::v3::HeaderMutation;
        hcm.early_header_mutation_extensions = vec![TypedExtensionConfig {
            name: "envoy.http.early_header_mutation.header_mutation".into(),
            typed_config: Some(any(
                "type.googleapis.com/envoy.extensions.http.early_header_mutation.header_mutation.v3.HeaderMutation",
                &HeaderMutation {
                    mutations: s.early_request_headers.iter().map(mutation).collect(),
                },
            )),
        }];
    }
    // Health checks are answered before any other filter sees the request.
    if let Some(path) = &s.health_check_path {
        use envoy_types::pb::envoy::config::route::v3::{header_matcher, HeaderMatcher};
        use envoy_types::pb::envoy::extensions::filters::http::health_check::v3::HealthCheck;
        use envoy_types::pb::envoy::r#type::matcher::v3::{string_matcher, StringMatcher};
        let hc = HealthCheck {
            pass_through_mode: Some(BoolValue { value: false }),
            headers: vec![HeaderMatcher {
                name: ":path".into(),
                header_match_specifier: Some(header_matcher::HeaderMatchSpecifier::StringMatch(
                    StringMatcher {
                        match_pattern: Some(string_matcher::MatchPattern::Exact(path.clone())),
                        ..Default::default()
                    },
                )),
                ..Default::default()
            }],
            ..Default::default()
        };
        hcm.http_filters.insert(
            0,
            HttpFilter {
                name: HEALTH_CHECK_FILTER.into(),
                config_type: Some(http_filter::ConfigType::TypedConfig(any(
                    "type.googleapis.com/envoy.extensions.filters.http.health_check.v3.HealthCheck",
                    &hc,
                ))),
                ..Default::default()
            },
        );
    }
    // Late response headers: the first filter, so the last to see each response (also the
    // health check's and other filters' local replies).
    if !s.late_response_headers.is_empty() {
        use envoy_types::pb::envoy::extensions::filters::http::header_mutation::v3::{
            HeaderMutation, Mutations,
        };
        hcm.http_filters.insert(
            0,
            HttpFilter {
                name: LATE_HEADERS_FILTER.into(),
                config_type: Some(http_filter::ConfigType::TypedConfig(any(
                    "type.googleapis.com/envoy.extensions.filters.http.header_mutation.v3.HeaderMutation",
                    &HeaderMutation {
                        mutations: Some(Mutations {
                            response_mutations: s
                                .late_response_headers
                                .iter()
                                .map(mutation)
                                .collect(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    },
                ))),
                ..Default::default()
            },
        );
    }
}

pub(crate) fn mutation(
    op: &HeaderOp,
) -> envoy_types::pb::envoy::config::common::mutation_rules::v3::HeaderMutation {
    use envoy_types::pb::envoy::config::common::mutation_rules::v3::{
        header_mutation, HeaderMutation,
    };
    use envoy_types::pb::envoy::config::core::v3::{
        header_value_option::HeaderAppendAction as A, HeaderValue, HeaderValueOption,
    };
    let append = |n: &str, v: &str, a: A| {
        header_mutation::Action::Append(HeaderValueOption {
            header: Some(HeaderValue {
                key: n.to_string(),
                value: v.to_string(),
                ..Default::default()
            }),
            append_action: a as i32,
            ..Default::default()
        })
    };
    HeaderMutation {
        action: Some(match op {
            HeaderOp::Set(n, v) => append(n, v, A::OverwriteIfExistsOrAdd),
            HeaderOp::Add(n, v) => append(n, v, A::AppendIfExistsOrAdd),
            HeaderOp::AddIfAbsent(n, v) => append(n, v, A::AddIfAbsent),
            HeaderOp::Remove(n) => header_mutation::Action::Remove(n.clone()),
            HeaderOp::RemoveOnMatch(m) => {
                header_mutation::Action::RemoveOnMatch(header_mutation::RemoveOnMatch {
                    key_matcher: Some(string_matcher(m)),
                })
            }
        }),
    }
}

/// The downstream TLS context of a TLS-terminating filter chain. Envoy Gateway pins TLS 1.2 to
/// 1.3 on every such listener unless the policy says otherwise.
pub(crate) fn apply_tls(s: &ClientSettings, ctx: &mut DownstreamTlsContext) {
    use tls_parameters::TlsProtocol as P;
    let t = &s.tls;
    let common = ctx.common_tls_context.get_or_insert_with(Default::default);
    common.tls_params = Some(TlsParameters {
        tls_minimum_protocol_version: t.min.unwrap_or(P::TlSv12) as i32,
        tls_maximum_protocol_version: t.max.unwrap_or(P::TlSv13) as i32,
        cipher_suites: t.ciphers.clone(),
        ecdh_curves: t.ecdh_curves.clone(),
        signature_algorithms: t.signature_algorithms.clone(),
        ..Default::default()
    });
    if let Some(alpn) = &t.alpn {
        common.alpn_protocols = alpn.clone();
    }
    if let Some(ca) = &t.client_ca {
        use envoy_types::pb::envoy::config::core::v3::{data_source, DataSource};
        use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
            common_tls_context, CertificateValidationContext,
        };
        common.validation_context_type = Some(
            common_tls_context::ValidationContextType::ValidationContext(
                CertificateValidationContext {
                    trusted_ca: Some(DataSource {
                        specifier: Some(data_source::Specifier::InlineBytes(ca.pem.clone())),
                        ..Default::default()
                    }),
                    verify_certificate_spki: ca.spki_hashes.clone(),
                    verify_certificate_hash: ca.cert_hashes.clone(),
                    match_typed_subject_alt_names: ca
                        .sans
                        .iter()
                        .map(|(t, m, oid)| san_matcher(*t, m, oid))
                        .collect(),
                    allow_expired_certificate: ca.allow_expired,
                    crl: ca.crl.as_ref().map(|c| DataSource {
                        specifier: Some(data_source::Specifier::InlineBytes(c.pem.clone())),
                        ..Default::default()
                    }),
                    only_verify_leaf_cert_crl: ca.crl.as_ref().is_some_and(|c| c.only_leaf),
                    ..Default::default()
                },
            ),
        );
        ctx.require_client_certificate = Some(BoolValue {
            value: !ca.optional,
        });
    }
    // Envoy Gateway turns both resumption kinds off unless the policy asks for them.
    use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::downstream_tls_context::SessionTicketKeysType;
    ctx.session_ticket_keys_type = (!t.stateless_resumption).then_some(
        SessionTicketKeysType::DisableStatelessSessionResumption(true),
    );
    ctx.disable_stateful_session_resumption = !t.stateful_resumption;
}

pub(crate) fn san_matcher(
    t: SanType,
    m: &StrMatch,
    oid: &str,
) -> envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::SubjectAltNameMatcher {
    envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::SubjectAltNameMatcher {
        san_type: t as i32,
        matcher: Some(string_matcher(m)),
        oid: oid.to_string(),
    }
}

pub(crate) fn string_matcher(
    m: &StrMatch,
) -> envoy_types::pb::envoy::r#type::matcher::v3::StringMatcher {
    use envoy_types::pb::envoy::r#type::matcher::v3::{
        string_matcher::MatchPattern, RegexMatcher, StringMatcher,
    };
    let pattern = match m {
        StrMatch::Exact(v) => MatchPattern::Exact(v.clone()),
        StrMatch::Prefix(v) => MatchPattern::Prefix(v.clone()),
        StrMatch::Suffix(v) => MatchPattern::Suffix(v.clone()),
        StrMatch::Regex(v) => MatchPattern::SafeRegex(RegexMatcher {
            regex: v.clone(),
            ..Default::default()
        }),
    };
    StringMatcher {
        match_pattern: Some(pattern),
        ..Default::default()
    }
}

// `envoy.extensions.http.original_ip_detection.xff.v3.XffConfig` with its `xff_trusted_cidrs`
// field (tag 2), which the generated types of envoy-types 0.7 predate; the tags are those of
// Envoy's xff.proto.

#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct XffConfig {
    #[prost(uint32, tag = "1")]
    pub xff_num_trusted_hops: u32,
    #[prost(message, optional, tag = "2")]
    pub xff_trusted_cidrs: Option<XffTrustedCidrs>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct XffTrustedCidrs {
    #[prost(message, repeated, tag = "1")]
    pub cidrs: Vec<CidrRange>,
}
