//! `peace.v1.WatchEvent`, written by hand so a watch event can be sent from
//! bytes encoded once for every watcher.
//!
//! With a thousand watchers, rendering and encoding each revision once per
//! watcher was most of the server's work per event (see docs/BENCHMARKS.md).
//! The watch feeder now encodes a revision's event once, keeps the bytes in the
//! hub's entry for that revision, and hands every watcher a [`WatchEvent`]
//! holding those shared bytes: sending it copies them into the stream's buffer.
//!
//! `build.rs` maps `.peace.v1.WatchEvent` here (`extern_path`), so the
//! generated server and client use this type. On the wire it is the same
//! message; decoding fills [`WatchEvent::event`] as the generated type would.

use bytes::{Buf, BufMut, Bytes};
use prost::encoding::{skip_field, DecodeContext, WireType};
use prost::{DecodeError, Message};

/// One watch event: a revision or a progress mark.
#[derive(Clone, Default)]
pub struct WatchEvent {
    /// The event, as decoded or as built for sending.
    pub event: Option<watch_event::Event>,
    /// When set, the complete encoding of this message, sent instead of `event`.
    encoded: Option<Bytes>,
}

/// Nested types of `WatchEvent`, as prost would generate them (but for the boxed revision).
pub mod watch_event {
    /// The oneof `event`. Unlike prost's generated type, the revision is
    /// boxed: a `Revision` is 880 bytes inline, and the server moves each
    /// event through several layers of stream adapters, so an unboxed event
    /// made every send copy some 900 bytes several times.
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Event {
        /// A committed revision matching the watch.
        #[prost(message, boxed, tag = "1")]
        Revision(Box<crate::pb::Revision>),
        /// Everything matching up to a revision has been sent.
        #[prost(message, tag = "2")]
        Progress(crate::pb::Progress),
    }
}

impl WatchEvent {
    /// An event carrying `event`.
    pub fn new(event: watch_event::Event) -> WatchEvent {
        WatchEvent {
            event: Some(event),
            encoded: None,
        }
    }

    /// An event sent as `bytes`, which must be a complete `WatchEvent` encoding.
    pub fn pre_encoded(bytes: Bytes) -> WatchEvent {
        WatchEvent {
            event: None,
            encoded: Some(bytes),
        }
    }

    /// The complete encoding of an event, to share with [`WatchEvent::pre_encoded`].
    pub fn encode_shared(event: watch_event::Event) -> Bytes {
        Bytes::from(WatchEvent::new(event).encode_to_vec())
    }
}

impl Message for WatchEvent {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        match (&self.encoded, &self.event) {
            (Some(bytes), _) => buf.put_slice(bytes),
            (None, Some(event)) => event.encode(buf),
            (None, None) => {}
        }
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        match tag {
            1 | 2 => {
                self.encoded = None;
                watch_event::Event::merge(&mut self.event, tag, wire_type, buf, ctx)
            }
            _ => skip_field(wire_type, tag, buf, ctx),
        }
    }

    fn encoded_len(&self) -> usize {
        match (&self.encoded, &self.event) {
            (Some(bytes), _) => bytes.len(),
            (None, Some(event)) => event.encoded_len(),
            (None, None) => 0,
        }
    }

    fn clear(&mut self) {
        self.event = None;
        self.encoded = None;
    }
}

impl PartialEq for WatchEvent {
    /// Equal when they encode the same (a pre-encoded event equals its decoded form).
    fn eq(&self, other: &WatchEvent) -> bool {
        self.encode_to_vec() == other.encode_to_vec()
    }
}

impl std::fmt::Debug for WatchEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.encoded {
            Some(bytes) => f
                .debug_struct("WatchEvent")
                .field("pre_encoded_bytes", &bytes.len())
                .finish(),
            None => f
                .debug_struct("WatchEvent")
                .field("event", &self.event)
                .finish(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn revision_event() -> watch_event::Event {
        watch_event::Event::Revision(Box::new(crate::pb::Revision {
            revision: 42,
            plan_id: "us-28-point".into(),
            clause_id: "p7".into(),
            reason: "a reason".into(),
            ..Default::default()
        }))
    }

    #[test]
    fn a_pre_encoded_event_sends_the_same_bytes_and_decodes_back() {
        let built = WatchEvent::new(revision_event());
        let shared = WatchEvent::pre_encoded(WatchEvent::encode_shared(revision_event()));
        assert_eq!(shared.encode_to_vec(), built.encode_to_vec());
        assert_eq!(shared.encoded_len(), built.encoded_len());
        let decoded = WatchEvent::decode(&shared.encode_to_vec()[..]).unwrap();
        assert_eq!(decoded.event, Some(revision_event()));
        let progress = watch_event::Event::Progress(crate::pb::Progress {
            revision: 7,
            caught_up: true,
        });
        let decoded =
            WatchEvent::decode(&WatchEvent::new(progress.clone()).encode_to_vec()[..]).unwrap();
        assert_eq!(decoded.event, Some(progress));
    }

    /// What prost generates for the proto's `WatchEvent`.
    #[derive(Clone, PartialEq, prost::Message)]
    struct Generated {
        #[prost(oneof = "watch_event::Event", tags = "1, 2")]
        event: Option<watch_event::Event>,
    }

    #[test]
    fn it_matches_the_generated_message_on_the_wire() {
        let generated = Generated {
            event: Some(revision_event()),
        }
        .encode_to_vec();
        assert_eq!(WatchEvent::new(revision_event()).encode_to_vec(), generated);
        assert_eq!(
            WatchEvent::pre_encoded(WatchEvent::encode_shared(revision_event())).encode_to_vec(),
            generated
        );
        assert_eq!(
            Generated::decode(&generated[..]).unwrap().event,
            WatchEvent::decode(&generated[..]).unwrap().event
        );
    }
}
