//! Status page (in progress).
