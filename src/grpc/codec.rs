//! The protobuf codec with smaller per-stream buffers.
//!
//! tonic's default starts every RPC's encode buffer at 8 KiB and keeps it for
//! the life of the call. A watch stream lives for hours and mostly sends small
//! progress messages, so with thousands of watchers that buffer dominates
//! their memory. Starting at 1 KiB costs a reallocation when a large revision
//! is encoded, and saves most of the 8 KiB on every open stream (measured with
//! `peace-bench watch` at 10,000 watchers; see docs/BENCHMARKS.md).

use std::marker::PhantomData;

use tonic::codec::{BufferSettings, Codec};
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};

/// Initial encode/decode buffer per call.
const BUFFER_SIZE: usize = 1024;
/// When a stream's encoder yields to send what it has (tonic's default).
const YIELD_THRESHOLD: usize = 32 * 1024;

/// `ProstCodec` with `BUFFER_SIZE` (1 KiB) buffers; named by `build.rs` as the codec of
/// the generated server and client.
#[derive(Debug, Clone)]
pub struct LeanCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for LeanCodec<T, U> {
    fn default() -> Self {
        LeanCodec(PhantomData)
    }
}

impl<T, U> Codec for LeanCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstCodec::<T, U>::raw_encoder(BufferSettings::new(BUFFER_SIZE, YIELD_THRESHOLD))
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstCodec::<T, U>::raw_decoder(BufferSettings::new(BUFFER_SIZE, YIELD_THRESHOLD))
    }
}
