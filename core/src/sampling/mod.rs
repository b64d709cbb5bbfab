//! Sampling decisions (issue 4). Placeholder until implemented.
