//! Resource attributes built once per VM (issue 5). Placeholder until implemented.
