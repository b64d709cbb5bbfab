//! Trace context extraction and injection (issue 3). Placeholder until implemented.
