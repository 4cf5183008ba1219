//! Which policies apply where in one cluster ([`Policies`]): the attachment maps of every
//! policy kind together, as gateway translation asks them. Above the per-kind modules
//! ([`super::ctp`], [`super::btp`]), which build on the attachment mechanism of
//! [`crate::policy`] itself.

use super::{btp, ctp};
use crate::index::Index;
use flotilla_model::{Object, Resource, ResourceKey};
use serde_json::Value;

/// Which policies apply where in one cluster: what gateway translation asks while it builds
/// listeners, routes and clusters. Computed once per cluster per recompute, with the
/// policies' statuses.
#[derive(Default)]
pub(crate) struct Policies {
    pub ctp: ctp::CtpAttachment,
    pub btp: btp::BtpAttachment,
}

impl Policies {
    /// The ClientTrafficPolicy configuring listener `listener` of gateway `gw` (of its
    /// ListenerSet `set`, if the listener is one's).
    // Read by ClientTrafficPolicy translation (in progress elsewhere).
    #[allow(dead_code)]
    pub fn client<'a>(
        &self,
        ix: &'a Index,
        gw: &ResourceKey,
        set: Option<&ResourceKey>,
        listener: &str,
    ) -> Option<&'a Resource> {
        let key = self.ctp.for_listener(gw, set, listener)?;
        ix.resources.get(key).map(|r| &**r)
    }

    /// The BackendTrafficPolicy configuring rule `rule` (its name) of `route` as served by
    /// listener `listener` of gateway `gw` (of its ListenerSet `set`).
    // Read once BackendTrafficPolicy fields are translated.
    #[allow(dead_code)]
    pub fn backend<'a>(
        &self,
        ix: &'a Index,
        route: &ResourceKey,
        rule: Option<&str>,
        gw: &ResourceKey,
        set: Option<&ResourceKey>,
        listener: &str,
    ) -> Option<&'a Resource> {
        let key = self.btp.for_route_rule(route, rule, gw, set, listener)?;
        ix.resources.get(key).map(|r| &**r)
    }

    /// The policy a route-level BackendTrafficPolicy `policy` (of rule `rule` of `route`)
    /// merges into on that listener, when it asks to (`mergeType`). The arguments are
    /// [`Policies::backend`]'s and the policy it returned.
    #[allow(clippy::too_many_arguments)]
    pub fn backend_merge_parent<'a>(
        &self,
        ix: &'a Index,
        policy: &Resource,
        route: &ResourceKey,
        rule: Option<&str>,
        gw: &ResourceKey,
        set: Option<&ResourceKey>,
        listener: &str,
    ) -> Option<&'a Resource> {
        let Object::Extension(_, o) = &policy.object else {
            return None;
        };
        if o.spec.get("mergeType").is_none_or(Value::is_null)
            || !self.btp.is_route_level(&policy.key, route, rule)
        {
            return None;
        }
        let key = self.btp.merge_parent(gw, set, listener)?;
        ix.resources.get(key).map(|r| &**r)
    }
}
