//! The daemon's periodic jobs (stub; replaced by the full implementation).
