//! The scheduler tick (stub; replaced by the full implementation).
