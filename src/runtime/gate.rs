//! Whether this node may act: the `ActingGate` an HA leader's runtime asks before every turn,
//! action and shutdown, and `NotLeader`, the error of a loop that stopped because it may not.

use std::sync::Arc;

/// Asked before every turn, action and shutdown: false once this node no longer leads (HA on
/// PostgreSQL), so a deposed leader sends nothing more.
#[derive(Clone)]
pub struct ActingGate(Arc<dyn Fn() -> bool + Send + Sync>);

impl ActingGate {
    pub fn new(acting: impl Fn() -> bool + Send + Sync + 'static) -> Self {
        Self(Arc::new(acting))
    }

    pub fn acting(&self) -> bool {
        (self.0)()
    }
}

impl std::fmt::Debug for ActingGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ActingGate(acting: {})", self.acting())
    }
}

/// The loop stopped because this node no longer leads: it sent nothing after noticing.
#[derive(Debug, thiserror::Error)]
#[error("this node is no longer the leader: it stopped acting")]
pub struct NotLeader;
