//! Attribute keys the mapping looks up, by fixed id.
//!
//! A span's attribute dict records, as each entry is inserted, where each known key sits
//! ([`crate::value::Dict::indexed`]); the getters then find a known key by its id (an array
//! index) instead of hashing the literal key on every lookup. A key outside [`KNOWN`] (or a
//! dict without the record) is looked up by name, with the same result.

use std::sync::OnceLock;

/// An attribute key and its id in [`KNOWN`] ([`NONE`] when it is not there).
#[derive(Debug, Clone, Copy)]
pub struct Key {
    pub name: &'static str,
    pub id: u16,
}

pub const NONE: u16 = u16::MAX;

/// Every key the trace mapping looks up in span or resource attributes.
pub const KNOWN: &[&str] = &[
    "gen_ai.provider.name",
    "gen_ai.system",
    "llm.provider",
    "llm.system",
    "gen_ai.operation.name",
    "llm.request.type",
    "gen_ai.request.model",
    "llm.request.model",
    "gen_ai.response.model",
    "llm.response.model",
    "llm.model_name",
    "gen_ai.usage.input_tokens",
    "gen_ai.usage.prompt_tokens",
    "llm.usage.prompt_tokens",
    "llm.token_count.prompt",
    "gen_ai.usage.output_tokens",
    "gen_ai.usage.completion_tokens",
    "llm.usage.completion_tokens",
    "llm.token_count.completion",
    "gen_ai.usage.total_tokens",
    "llm.usage.total_tokens",
    "llm.token_count.total",
    "gen_ai.request.temperature",
    "llm.request.temperature",
    "gen_ai.request.max_tokens",
    "llm.request.max_tokens",
    "mlvigil.llm.time_to_first_token",
    "gen_ai.response.time_to_first_token",
    "gen_ai.server.time_to_first_token",
    "llm.response.time_to_first_token",
    "traceloop.workflow.name",
    "gen_ai.workflow.name",
    "traceloop.entity.name",
    "gen_ai.agent.name",
    "traceloop.entity.path",
    "error.type",
    "openinference.span.kind",
    "llm.invocation_parameters",
    "gen_ai.response.finish_reasons",
    "llm.response.finish_reason",
    "gen_ai.output.messages",
    "gen_ai.input.messages",
    "input.value",
    "output.value",
    "traceloop.span.kind",
    "mlvigil.model.name",
    "mlvigil.model.version",
    "mlvigil.inference.request_id",
    "mlvigil.inference.features",
    "mlvigil.inference.prediction",
    "mlvigil.inference.score",
    "mlvigil.label.request_id",
    "mlvigil.label.value",
    "mlvigil.train.run_id",
    "mlvigil.train.step",
    "mlvigil.train.rank",
    "mlvigil.train.world_size",
    "mlvigil.train.loss",
    "mlvigil.train.grad_norm",
    "mlvigil.train.learning_rate",
    "mlvigil.train.samples",
    "mlvigil.train.tokens",
    "mlvigil.train.data_wait_seconds",
    "mlvigil.train.forward_seconds",
    "mlvigil.train.backward_seconds",
    "mlvigil.train.optimizer_seconds",
    "mlvigil.train.comm_seconds",
    "mlvigil.train.checkpoint_seconds",
    "mlvigil.train.step_time_seconds",
    "mlvigil.train.gpu_uuid",
    "hw.id",
    "service.name",
    "service.version",
    "host.name",
    "k8s.node.name",
    "k8s.pod.name",
];

pub const NK: usize = KNOWN.len();

const fn same(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// The id of `name` in [`KNOWN`], at compile time.
pub const fn key(name: &'static str) -> Key {
    let mut i = 0;
    while i < KNOWN.len() {
        if same(KNOWN[i], name) {
            return Key { name, id: i as u16 };
        }
        i += 1;
    }
    Key { name, id: NONE }
}

/// A known key with its id computed at compile time.
#[macro_export]
macro_rules! k {
    ($name:literal) => {
        const { $crate::keys::key($name) }
    };
}

const TABLE: usize = 256;

/// `KNOWN` by hash (slot: id + 1, 0 empty), built on first use.
fn table() -> &'static [u16; TABLE] {
    static T: OnceLock<[u16; TABLE]> = OnceLock::new();
    T.get_or_init(|| {
        let mut t = [0u16; TABLE];
        for (id, name) in KNOWN.iter().enumerate() {
            let mut s = crate::value::key_hash(name) as usize & (TABLE - 1);
            while t[s] != 0 {
                s = (s + 1) & (TABLE - 1);
            }
            t[s] = id as u16 + 1;
        }
        t
    })
}

/// The id of an inserted key whose [`crate::value::key_hash`] is `hash`.
#[inline]
pub fn known_id(name: &str, hash: u64) -> Option<usize> {
    let t = table();
    let mut s = hash as usize & (TABLE - 1);
    loop {
        match t[s] {
            0 => return None,
            i if KNOWN[i as usize - 1] == name => return Some(i as usize - 1),
            _ => s = (s + 1) & (TABLE - 1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_known_key_is_found_and_distinct() {
        for (i, name) in KNOWN.iter().enumerate() {
            assert_eq!(KNOWN.iter().position(|k| k == name), Some(i), "{name} listed twice");
            assert_eq!(known_id(name, crate::value::key_hash(name)), Some(i));
        }
        assert_eq!(known_id("gen_ai.nope", crate::value::key_hash("gen_ai.nope")), None);
        assert_eq!(key("gen_ai.system").id, 1);
        assert_eq!(key("not.known").id, NONE);
    }
}
