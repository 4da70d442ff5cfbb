//! Request decoding + validation: any bytes a client can send, decoded as each
//! write request and converted to a domain write, must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use peace_tracker::grpc::convert::{apply_from, WriteRequest};
use peace_tracker::pb;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    if let Ok(req) = pb::ApplyRequest::decode(data) {
        let _ = apply_from(req);
    }
    if let Ok(req) = pb::CreatePlanRequest::decode(data) {
        let _ = WriteRequest::try_from(req);
    }
    if let Ok(req) = pb::AddPartyRequest::decode(data) {
        let _ = WriteRequest::try_from(req);
    }
    if let Ok(req) = pb::CreateClauseRequest::decode(data) {
        let _ = WriteRequest::try_from(req);
    }
    if let Ok(req) = pb::AmendClauseRequest::decode(data) {
        let _ = WriteRequest::try_from(req);
    }
    if let Ok(req) = pb::SetStanceRequest::decode(data) {
        let _ = WriteRequest::try_from(req);
    }
    if let Ok(req) = pb::SetClauseStatusRequest::decode(data) {
        let _ = WriteRequest::try_from(req);
    }
});
