//! HTTP probes and metrics (stub; replaced by the full implementation).
