//! The cluster-level settings of the connection to the backends, read from the spec: routing
//! type, preconnect, circuit breaker, TCP keepalive, DNS and HTTP/2. The load balancer is in
//! [`super::load_balancer`], health checks in [`super::health_check`].

use super::parser::Parser;
use crate::ir::cluster::*;

impl Parser<'_> {
    /// `routingType`: `Service` routes to the Service's cluster IP (Envoy Gateway's
    /// `IsServiceRouting`); `Endpoint`, the default, to its endpoints.
    pub(super) fn service_routing(&mut self) -> bool {
        match self.str("/routingType") {
            None | Some("Endpoint") => false,
            Some("Service") => true,
            Some(o) => {
                self.err("RoutingType", format!("unsupported routing type {o}"));
                false
            }
        }
    }

    /// `connection.preconnect`: Envoy takes ratios from 1 to 3 (100% to 300%).
    pub(super) fn preconnect(&mut self) -> Option<(Option<u32>, Option<u32>)> {
        self.get("/connection/preconnect")?;
        let pct = |p: &mut Self, f: &str, name: &str| {
            let v = p.u32(
                &format!("/connection/preconnect/{f}"),
                "BackendConnection",
                name,
            )?;
            if !(100..=300).contains(&v) {
                p.err(
                    "BackendConnection",
                    format!("{name} value {v} is out of range, must be between 100 and 300"),
                );
                return None;
            }
            Some(v)
        };
        let per = pct(self, "perEndpointPercent", "PerEndpointPercent");
        let predictive = pct(self, "predictivePercent", "PredictivePercent");
        (per.is_some() || predictive.is_some()).then_some((per, predictive))
    }

    pub(super) fn circuit_breaker(&mut self) -> Option<CircuitBreaker> {
        self.get("/circuitBreaker")?;
        let f = |p: &mut Self, field: &str, name: &str| {
            p.u32(&format!("/circuitBreaker/{field}"), "CircuitBreaker", name)
        };
        Some(CircuitBreaker {
            max_connections: f(self, "maxConnections", "MaxConnections"),
            max_pending_requests: f(self, "maxPendingRequests", "MaxPendingRequests"),
            max_parallel_requests: f(self, "maxParallelRequests", "MaxParallelRequests"),
            max_parallel_retries: f(self, "maxParallelRetries", "MaxParallelRetries"),
            max_requests_per_connection: f(
                self,
                "maxRequestsPerConnection",
                "MaxRequestsPerConnection",
            ),
        })
    }

    pub(super) fn tcp_keepalive(&mut self) -> Option<TcpKeepalive> {
        self.get("/tcpKeepalive")?;
        let secs = |p: &mut Self, f: &str, name: &str| {
            let d = p.duration(&format!("/tcpKeepalive/{f}"), "TCPKeepalive", name)?;
            match u32::try_from(d / 1_000_000_000) {
                Ok(s) if s > 0 => Some(s),
                _ => {
                    p.err("TCPKeepalive", format!("{name} must be at least 1s"));
                    None
                }
            }
        };
        Some(TcpKeepalive {
            probes: self.u32("/tcpKeepalive/probes", "TCPKeepalive", "Probes"),
            idle_time: secs(self, "idleTime", "IdleTime"),
            interval: secs(self, "interval", "Interval"),
        })
    }

    pub(super) fn dns(&mut self) -> Option<Dns> {
        self.get("/dns")?;
        let refresh_rate = self.duration("/dns/dnsRefreshRate", "DNS", "DNSRefreshRate");
        // Envoy takes a refresh rate above 1ms only.
        if refresh_rate.is_some_and(|d| d <= 1_000_000) {
            self.err("DNS", "dnsRefreshRate must be greater than 1ms".into());
        }
        let lookup_family = match self.str("/dns/lookupFamily") {
            None => None,
            Some("IPv4") => Some(DnsFamily::V4Only),
            Some("IPv6") => Some(DnsFamily::V6Only),
            Some("IPv4Preferred") => Some(DnsFamily::V4Preferred),
            Some("IPv6Preferred") => Some(DnsFamily::V6Preferred),
            Some("IPv4AndIPv6") => Some(DnsFamily::All),
            // Envoy Gateway takes any other value as unset.
            Some(_) => None,
        };
        Some(Dns {
            refresh_rate,
            respect_ttl: self.bool("/dns/respectDnsTtl"),
            lookup_family,
        })
    }

    pub(super) fn http2(&mut self) -> Option<Http2> {
        self.get("/http2")?;
        // Envoy's bounds on HTTP/2 flow-control windows.
        let window = |p: &mut Self, f: &str, name: &str| {
            let w = p.quantity_u32(&format!("/http2/{f}"), "HTTP2", name)?;
            if !(65_535..=2_147_483_647).contains(&w) {
                p.err("HTTP2", format!("{name} value {w} is out of range"));
                return None;
            }
            Some(w)
        };
        let terminate_stream_on_invalid = match self.str("/http2/onInvalidMessage") {
            None => None,
            Some("TerminateStream") => Some(true),
            Some("TerminateConnection") => Some(false),
            Some(o) => {
                self.err("HTTP2", format!("unsupported onInvalidMessage {o}"));
                None
            }
        };
        Some(Http2 {
            initial_stream_window_size: window(
                self,
                "initialStreamWindowSize",
                "InitialStreamWindowSize",
            ),
            initial_connection_window_size: window(
                self,
                "initialConnectionWindowSize",
                "InitialConnectionWindowSize",
            ),
            max_concurrent_streams: self.u32(
                "/http2/maxConcurrentStreams",
                "HTTP2",
                "MaxConcurrentStreams",
            ),
            terminate_stream_on_invalid,
        })
    }
}
