//! The protobuf codec of every generated service and client.
//!
//! tonic's prost codec answers bytes that do not decode (invalid UTF-8 in
//! a string field, garbage) with `INTERNAL`, which tells the sender the hub
//! failed. The fault is the sender's: this codec answers
//! `INVALID_ARGUMENT`, with prost's description, which names the message
//! and field where it says which. Encoding is tonic's, unchanged. Clients
//! generated from this crate use it too: a response that does not decode
//! is reported the same way, its description naming the response message.

use std::marker::PhantomData;
use tonic::Status;
use tonic::codec::{BufferSettings, DecodeBuf, Decoder};
use tonic_prost::{ProstCodec, ProstEncoder};

/// [`tonic_prost::ProstCodec`] but for the status of undecodable bytes.
pub struct WireCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for WireCodec<T, U> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<T, U> tonic::codec::Codec for WireCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = WireDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstCodec::<T, U>::raw_encoder(BufferSettings::default())
    }

    fn decoder(&mut self) -> Self::Decoder {
        WireDecoder(PhantomData)
    }
}

/// Decodes one message; undecodable bytes are the sender's error.
pub struct WireDecoder<U>(PhantomData<U>);

impl<U: prost::Message + Default> Decoder for WireDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        U::decode(buf).map(Some).map_err(|e| {
            Status::invalid_argument(format!(
                "{e}; send messages encoded from the tongbao.v1 protobuf definitions"
            ))
        })
    }
}
