//! Span records (issue 5). Placeholder until implemented.
