//! Notifications (in progress).
