//! The encoded resources of other services: a waypoint records spans for its sources and
//! destinations, each exported under its own service's resource (OTLP `trace.proto`,
//! `ResourceSpans`). Each is encoded once and shared by the spans of that service.

use crate::otlp::BatchEncoder;
use crate::resource::peer_resource;
use crate::span::{AttrValue, PeerResource};
use std::collections::VecDeque;
use std::rc::Rc;

/// Encoded resources of other services kept for reuse; beyond, the oldest is forgotten (spans
/// still queued keep theirs).
pub const MAX_PEER_RESOURCES: usize = 32;

#[derive(Debug)]
pub(crate) struct PeerResources {
    /// The proxy's own resource attributes, the base of every peer resource.
    own: Vec<(String, AttrValue)>,
    /// Oldest first, at most [`MAX_PEER_RESOURCES`].
    encoded: VecDeque<(PeerResource, Rc<[u8]>)>,
}

impl PeerResources {
    pub fn new(own: Vec<(String, AttrValue)>) -> PeerResources {
        PeerResources {
            own,
            encoded: VecDeque::new(),
        }
    }

    /// The encoded resource of `peer`: from the cache, or encoded once and kept.
    pub fn get(&mut self, peer: &PeerResource) -> Rc<[u8]> {
        if let Some((_, encoded)) = self.encoded.iter().find(|(p, _)| p == peer) {
            return encoded.clone();
        }
        let encoded: Rc<[u8]> =
            BatchEncoder::encode_resource(peer_resource(&self.own, peer)).into();
        if self.encoded.len() >= MAX_PEER_RESOURCES {
            self.encoded.pop_front();
        }
        self.encoded.push_back((peer.clone(), encoded.clone()));
        encoded
    }

    pub fn len(&self) -> usize {
        self.encoded.len()
    }
}
