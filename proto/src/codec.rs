//! The gRPC codec: prost encoding with small initial buffers.
//!
//! tonic's default gives every stream an 8 KiB encode buffer and an 8 KiB decode buffer. Our
//! messages are a few hundred bytes (a command, a result, a heartbeat), and a server holds one
//! long-lived stream per device: at 10,000 devices the defaults alone are 160 MiB. The buffers
//! still grow for a large message (a passcode policy document); they just start small.
use std::marker::PhantomData;

use tonic::codec::{BufferSettings, Codec};
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};

/// Initial encode and decode buffer per RPC.
pub const INITIAL_BUFFER: usize = 512;
/// tonic's default: how much encoded data a stream writes before it yields.
pub const YIELD_THRESHOLD: usize = 32 * 1024;

/// [`ProstCodec`] with [`INITIAL_BUFFER`]-byte buffers (named in `build.rs` for every service).
#[derive(Debug, Clone, Default)]
pub struct SmallCodec<T, U> {
    _pd: PhantomData<(T, U)>,
}

impl<T, U> Codec for SmallCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstCodec::<T, U>::raw_encoder(BufferSettings::new(INITIAL_BUFFER, YIELD_THRESHOLD))
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstCodec::<T, U>::raw_decoder(BufferSettings::new(INITIAL_BUFFER, YIELD_THRESHOLD))
    }
}
