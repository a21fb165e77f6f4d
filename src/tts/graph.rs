//! A Piper voice cut in two: its front (text encoder, durations and flow: phoneme ids in, the
//! clause's latent frames out) and its decoder (HiFi-GAN: latent frames in, samples out).
//!
//! Why: run whole, the voice decodes a clause in one go and ONNX Runtime holds the decoder's
//! activations for all of it, ~20 MiB per second of speech (an 8 s clause raised the process by
//! 150-180 MiB, most of `sotto agent`'s peak). The decoder looks at most a few frames to either
//! side, so a clause decoded a window at a time, each window with [`CONTEXT_FRAMES`] of context
//! on both sides, gives the same samples, and the memory follows the window, not the clause.
//!
//! How: an ONNX model is a protobuf `ModelProto`. Only what the cut needs is read (the graph's
//! nodes with their input and output names, and the names of its tensors and values); every
//! other field is copied byte for byte. The cut is the input of the convolution whose weight is
//! `dec.conv_pre.weight` (Piper's exports keep PyTorch's parameter names). A voice without it,
//! or with control flow or sparse tensors (whose inputs this reading cannot see), is not cut
//! and runs whole, as before.
//!
//! The decoder's convolutions are 1-D. Where every other step of the decoder does the same
//! whatever a tensor's rank (adds, activations, scalings), they are rewritten as 2-D
//! convolutions of height 1 and the decoder takes the latent frames as `[1, channels, 1,
//! frames]`: ONNX Runtime runs 2-D convolutions with its blocked-channel kernels (NCHWc) where
//! 1-D ones go through im2col and a GEMM, and on one thread the joe voice's decoder then takes
//! ~25 % less time (86 against 112 ms for 308 frames; onnxruntime 1.32, AVX-512). Same sums in
//! another order: samples within ~1e-6 of the 1-D decoder's.
//!
//! Runs once at load, on the thread loading the voice; nothing is written to disk (the audit
//! identifies the voice's own file, and the two parts are a function of it).

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

/// The decoder's context, in latent frames, on each side of a window. HiFi-GAN's convolutions
/// reach under 16 frames in all (joe voice: 8 frames of context left differences of 1e-3 at a
/// window's edge, 16 none at all); a window's edge outside the clause is the clause's own end.
pub const CONTEXT_FRAMES: usize = 16;

/// The voice in two parts, each a complete ONNX model.
#[derive(Debug)]
pub struct Split {
    pub front: Vec<u8>,
    pub decoder: Vec<u8>,
    /// The tensor between them: the front's output and the decoder's first input.
    pub latent: String,
    /// The decoder's convolutions were made 2-D (see the module's doc): it takes the latent
    /// frames as `[1, channels, 1, frames]`, not `[1, channels, frames]`.
    pub decoder_2d: bool,
}

/// Why a voice's bytes cannot be read as an ONNX model.
#[derive(Debug, thiserror::Error)]
#[error("not a well-formed ONNX model: {0}")]
pub struct Malformed(&'static str);

/// Cuts a voice in two, or says why not: `Ok(None)` for a model this cut does not apply to.
///
/// With `weights_file` (the voice's file name), the parts do not carry the weights: each
/// weight of [`EXTERNAL_MIN_BYTES`] or more is named by its place in that file, which ONNX
/// Runtime reads itself (told the folder with `session.model_external_initializers_file_folder_path`).
/// The parts are then ~0.6 MB instead of 63, and the voice loads as fast as it did whole
/// (copying the weights into the parts cost ~30 ms of page faults and the parts' parsing more).
pub fn split(model: &[u8], weights_file: Option<&str>) -> Result<Option<Split>, Malformed> {
    let top = fields(model)?;
    let Some(graph_field) = top.iter().find(|f| f.number == MODEL_GRAPH) else {
        return Err(Malformed("no graph"));
    };
    let graph = Graph::read(graph_field.body()?)?;
    if graph.has_sparse_tensors
        || graph
            .nodes
            .iter()
            .any(|n| matches!(n.op_type, "If" | "Loop" | "Scan"))
    {
        return Ok(None);
    }
    let Some(latent) = graph
        .nodes
        .iter()
        .find(|n| n.inputs.contains(&"dec.conv_pre.weight"))
        .and_then(|n| n.inputs.first().copied())
    else {
        return Ok(None);
    };
    let front = graph.part(&[latent], None);
    let outputs: Vec<&str> = graph.outputs.iter().map(|o| o.name).collect();
    let decoder = graph.part(&outputs, Some(latent));
    // The decoder is run on the latent frames, and on the speaker for a voice of several.
    if decoder.nodes.is_empty()
        || !decoder.inputs.contains(&latent)
        || decoder.inputs.iter().any(|i| *i != latent && *i != "sid")
    {
        return Ok(None);
    }
    let latent_info = graph
        .value_info
        .iter()
        .find(|v| v.name == latent)
        .map_or_else(|| float_tensor_info(latent), |v| v.body.to_vec());

    // The model's other fields as they were, its graph replaced by the part's; written in one
    // pass into a buffer of the final size (without `weights_file` the weights are copied,
    // tens of megabytes: growing the buffer would copy them again).
    let write_model =
        |part: &Part, inputs: Vec<Vec<u8>>, outputs: Vec<Vec<u8>>, two_d: Option<&Conv2d>| {
            let pieces = graph.pieces(part, &inputs, &outputs, model, weights_file, two_d)?;
            let graph_len: usize = pieces.iter().map(Piece::len).sum();
            let others: usize = (top.iter().filter(|f| f.number != MODEL_GRAPH))
                .map(|f| f.raw.len())
                .sum();
            let total = others + tag_len(MODEL_GRAPH) + varint_len(graph_len as u64) + graph_len;
            let mut out = Vec::with_capacity(total);
            for f in &top {
                if f.number == MODEL_GRAPH {
                    put_varint(
                        &mut out,
                        (u64::from(MODEL_GRAPH) << 3) | u64::from(WIRE_LEN),
                    );
                    put_varint(&mut out, graph_len as u64);
                    for piece in &pieces {
                        piece.write(&mut out);
                    }
                } else {
                    out.extend_from_slice(f.raw);
                }
            }
            debug_assert_eq!(out.len(), total);
            Ok::<_, Malformed>(out)
        };
    let original_inputs = |part: &Part| -> Vec<Vec<u8>> {
        graph
            .inputs
            .iter()
            .filter(|i| part.inputs.contains(&i.name))
            .map(|i| i.body.to_vec())
            .collect()
    };
    let front_bytes = write_model(
        &front,
        original_inputs(&front),
        vec![latent_info.clone()],
        None,
    )?;
    let two_d = Conv2d::plan(&graph, &decoder, latent)?;
    // A 2-D decoder's inputs and outputs have one more axis than the voice declares: they are
    // declared without a shape (ONNX Runtime infers them).
    let (decoder_inputs, decoder_outputs) = match &two_d {
        Some(_) => (
            vec![float_tensor_info(latent)],
            graph
                .outputs
                .iter()
                .map(|o| float_tensor_info(o.name))
                .collect(),
        ),
        None => {
            let mut inputs = vec![latent_info];
            inputs.extend(original_inputs(&decoder));
            (
                inputs,
                graph.outputs.iter().map(|o| o.body.to_vec()).collect(),
            )
        }
    };
    let decoder_bytes = write_model(&decoder, decoder_inputs, decoder_outputs, two_d.as_ref())?;
    Ok(Some(Split {
        front: front_bytes,
        decoder: decoder_bytes,
        latent: latent.to_string(),
        decoder_2d: two_d.is_some(),
    }))
}

// Field numbers from onnx.proto.
const MODEL_GRAPH: u32 = 7;
const GRAPH_NODE: u32 = 1;
const GRAPH_INITIALIZER: u32 = 5;
const GRAPH_INPUT: u32 = 11;
const GRAPH_OUTPUT: u32 = 12;
const GRAPH_VALUE_INFO: u32 = 13;
const GRAPH_SPARSE_INITIALIZER: u32 = 15;
const NODE_INPUT: u32 = 1;
const NODE_OUTPUT: u32 = 2;
const NODE_OP_TYPE: u32 = 4;
const NODE_ATTRIBUTE: u32 = 5;
const NODE_DOMAIN: u32 = 7;
const ATTRIBUTE_NAME: u32 = 1;
const ATTRIBUTE_INTS: u32 = 8;
const ATTRIBUTE_TYPE: u32 = 20;
const ATTRIBUTE_TYPE_INTS: u64 = 7;
const TENSOR_DIMS: u32 = 1;
const TENSOR_NAME: u32 = 8;
const TENSOR_RAW_DATA: u32 = 9;
const TENSOR_EXTERNAL_DATA: u32 = 13;
const TENSOR_DATA_LOCATION: u32 = 14;
const DATA_LOCATION_EXTERNAL: u64 = 1;
const VALUE_INFO_NAME: u32 = 1;
const VALUE_INFO_TYPE: u32 = 2;
const TYPE_TENSOR: u32 = 1;
const TENSOR_TYPE_ELEM_TYPE: u32 = 1;
const ELEM_TYPE_FLOAT: u64 = 1;

const WIRE_VARINT: u8 = 0;
const WIRE_FIXED64: u8 = 1;
const WIRE_LEN: u8 = 2;
const WIRE_FIXED32: u8 = 5;

/// One field of a protobuf message: its number, and its bytes with (`raw`) and without its tag.
struct Field<'a> {
    number: u32,
    wire: u8,
    raw: &'a [u8],
    value: &'a [u8],
}

impl<'a> Field<'a> {
    fn body(&self) -> Result<&'a [u8], Malformed> {
        if self.wire == WIRE_LEN {
            Ok(self.value)
        } else {
            Err(Malformed("a message field is not length-delimited"))
        }
    }

    fn text(&self) -> Result<&'a str, Malformed> {
        std::str::from_utf8(self.body()?).map_err(|_| Malformed("a name is not UTF-8"))
    }
}

fn varint(buf: &[u8], at: &mut usize) -> Result<u64, Malformed> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *buf.get(*at).ok_or(Malformed("ends inside a number"))?;
        *at += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(Malformed("a number longer than 10 bytes"))
}

/// The fields of one message, in order.
fn fields(buf: &[u8]) -> Result<Vec<Field<'_>>, Malformed> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < buf.len() {
        let start = at;
        let tag = varint(buf, &mut at)?;
        let number = u32::try_from(tag >> 3).map_err(|_| Malformed("a field number too large"))?;
        let wire = (tag & 7) as u8;
        let value_start = at;
        let len = match wire {
            WIRE_VARINT => {
                varint(buf, &mut at)?;
                0
            }
            WIRE_FIXED64 => 8,
            WIRE_FIXED32 => 4,
            WIRE_LEN => {
                let len = varint(buf, &mut at)?;
                usize::try_from(len).map_err(|_| Malformed("a field too long"))?
            }
            _ => return Err(Malformed("an unknown or group wire type")),
        };
        let value_start = if wire == WIRE_LEN { at } else { value_start };
        let end = at
            .checked_add(len)
            .filter(|&e| e <= buf.len())
            .ok_or(Malformed("a field runs past its message"))?;
        at = end;
        out.push(Field {
            number,
            wire,
            raw: &buf[start..end],
            value: &buf[value_start..end],
        });
    }
    Ok(out)
}

/// The values of a repeated integer field (`number`) among `fields`, packed or not.
fn ints(fields: &[Field], number: u32) -> Result<Vec<i64>, Malformed> {
    let mut out = Vec::new();
    for f in fields.iter().filter(|f| f.number == number) {
        match f.wire {
            WIRE_VARINT => out.push(varint(f.value, &mut 0)? as i64),
            WIRE_LEN => {
                let mut at = 0;
                while at < f.value.len() {
                    out.push(varint(f.value, &mut at)? as i64);
                }
            }
            _ => return Err(Malformed("an integer field of another wire type")),
        }
    }
    Ok(out)
}

/// Writes a repeated integer field, one value per tag (as onnx.proto, proto2, declares it).
fn put_ints(out: &mut Vec<u8>, number: u32, values: &[i64]) {
    for &v in values {
        put_varint(out, u64::from(number) << 3);
        put_varint(out, v as u64);
    }
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_bytes(out: &mut Vec<u8>, number: u32, bytes: &[u8]) {
    put_varint(out, (u64::from(number) << 3) | u64::from(WIRE_LEN));
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// A `ValueInfoProto` naming a float tensor of any shape.
fn float_tensor_info(name: &str) -> Vec<u8> {
    let mut tensor = Vec::new();
    put_varint(&mut tensor, u64::from(TENSOR_TYPE_ELEM_TYPE) << 3);
    put_varint(&mut tensor, ELEM_TYPE_FLOAT);
    let mut ty = Vec::new();
    put_bytes(&mut ty, TYPE_TENSOR, &tensor);
    let mut info = Vec::new();
    put_bytes(&mut info, VALUE_INFO_NAME, name.as_bytes());
    put_bytes(&mut info, VALUE_INFO_TYPE, &ty);
    info
}

struct Node<'a> {
    raw: &'a [u8],
    inputs: Vec<&'a str>,
    outputs: Vec<&'a str>,
    op_type: &'a str,
}

/// A named entry of the graph (a weight, an input, an output, a value's type): its message
/// without the tag, to be written back under whichever field it goes to.
struct Named<'a> {
    name: &'a str,
    body: &'a [u8],
}

impl<'a> Named<'a> {
    fn read(body: &'a [u8], name_field: u32) -> Result<Self, Malformed> {
        let name = fields(body)?
            .iter()
            .find(|f| f.number == name_field)
            .map(Field::text)
            .transpose()?
            .unwrap_or("");
        Ok(Self { name, body })
    }
}

struct Graph<'a> {
    /// Everything but the fields below (its name, doc string, ...), as it was.
    other: Vec<&'a [u8]>,
    nodes: Vec<Node<'a>>,
    initializers: Vec<Named<'a>>,
    inputs: Vec<Named<'a>>,
    outputs: Vec<Named<'a>>,
    value_info: Vec<Named<'a>>,
    has_sparse_tensors: bool,
}

/// The nodes (by index, in the graph's order), graph inputs and weights one part needs.
struct Part<'a> {
    nodes: Vec<usize>,
    inputs: HashSet<&'a str>,
    initializers: HashSet<&'a str>,
}

impl<'a> Graph<'a> {
    fn read(body: &'a [u8]) -> Result<Self, Malformed> {
        let mut g = Graph {
            other: Vec::new(),
            nodes: Vec::new(),
            initializers: Vec::new(),
            inputs: Vec::new(),
            outputs: Vec::new(),
            value_info: Vec::new(),
            has_sparse_tensors: false,
        };
        for f in fields(body)? {
            match f.number {
                GRAPH_NODE => {
                    let mut node = Node {
                        raw: f.value,
                        inputs: Vec::new(),
                        outputs: Vec::new(),
                        op_type: "",
                    };
                    for nf in fields(f.body()?)? {
                        match nf.number {
                            NODE_INPUT => node.inputs.push(nf.text()?),
                            NODE_OUTPUT => node.outputs.push(nf.text()?),
                            NODE_OP_TYPE => node.op_type = nf.text()?,
                            _ => {}
                        }
                    }
                    g.nodes.push(node);
                }
                GRAPH_INITIALIZER => g.initializers.push(Named::read(f.body()?, TENSOR_NAME)?),
                GRAPH_INPUT => g.inputs.push(Named::read(f.body()?, VALUE_INFO_NAME)?),
                GRAPH_OUTPUT => g.outputs.push(Named::read(f.body()?, VALUE_INFO_NAME)?),
                GRAPH_VALUE_INFO => g.value_info.push(Named::read(f.body()?, VALUE_INFO_NAME)?),
                GRAPH_SPARSE_INITIALIZER => g.has_sparse_tensors = true,
                _ => g.other.push(f.raw),
            }
        }
        Ok(g)
    }

    /// What computing `targets` takes, with `given` (if any) an input of the part.
    fn part(&self, targets: &[&'a str], given: Option<&'a str>) -> Part<'a> {
        let producer: HashMap<&str, usize> = self
            .nodes
            .iter()
            .enumerate()
            .flat_map(|(i, n)| n.outputs.iter().map(move |o| (*o, i)))
            .collect();
        let weights: HashSet<&str> = self.initializers.iter().map(|t| t.name).collect();
        let graph_inputs: HashSet<&str> = self.inputs.iter().map(|i| i.name).collect();
        let mut part = Part {
            nodes: Vec::new(),
            inputs: HashSet::new(),
            initializers: HashSet::new(),
        };
        let mut seen = HashSet::new();
        let mut todo: Vec<&'a str> = targets.to_vec();
        while let Some(name) = todo.pop() {
            // An empty name is an optional input left out.
            if name.is_empty() || !seen.insert(name) {
                continue;
            }
            if Some(name) == given {
                part.inputs.insert(name);
            } else if weights.contains(name) {
                part.initializers.insert(name);
            } else if graph_inputs.contains(name) {
                part.inputs.insert(name);
            } else if let Some(&i) = producer.get(name) {
                part.nodes.push(i);
                todo.extend(&self.nodes[i].inputs);
            }
        }
        part.nodes.sort_unstable();
        part.nodes.dedup();
        part
    }

    /// The part's graph, as the pieces of a `GraphProto`: the graph's own fields, the part's
    /// nodes and weights, and its `inputs` and `outputs` (`ValueInfoProto`s).
    fn pieces<'b>(
        &'b self,
        part: &Part,
        inputs: &'b [Vec<u8>],
        outputs: &'b [Vec<u8>],
        model: &[u8],
        weights_file: Option<&str>,
        two_d: Option<&'b Conv2d>,
    ) -> Result<Vec<Piece<'b>>, Malformed> {
        let mut out: Vec<Piece> = self.other.iter().map(|raw| Piece::Raw(raw)).collect();
        let mut made = HashSet::new();
        for &i in &part.nodes {
            let node = match two_d.and_then(|c| c.nodes.get(&i)) {
                Some(rewritten) => Cow::Borrowed(&rewritten[..]),
                None => Cow::Borrowed(self.nodes[i].raw),
            };
            out.push(Piece::Field(GRAPH_NODE, node));
            made.extend(self.nodes[i].outputs.iter().copied());
        }
        for t in &self.initializers {
            if part.initializers.contains(t.name) {
                let mut body = match weights_file {
                    Some(file) => external_weight(t.body, model, file)?,
                    None => Cow::Borrowed(t.body),
                };
                if two_d.is_some_and(|c| c.weights.contains(t.name)) {
                    body = Cow::Owned(with_height_one(&body)?);
                }
                out.push(Piece::Field(GRAPH_INITIALIZER, body));
            }
        }
        out.extend(inputs.iter().map(|b| Piece::Field(GRAPH_INPUT, b.into())));
        out.extend(outputs.iter().map(|b| Piece::Field(GRAPH_OUTPUT, b.into())));
        // The values' declared shapes are those of the 1-D graph: left out of a 2-D one.
        if two_d.is_none() {
            let outer: HashSet<&str> = self.outputs.iter().map(|o| o.name).collect();
            out.extend(
                (self.value_info.iter())
                    .filter(|v| {
                        made.contains(v.name)
                            && !outer.contains(v.name)
                            && !part.inputs.contains(v.name)
                    })
                    .map(|v| Piece::Field(GRAPH_VALUE_INFO, v.body.into())),
            );
        }
        Ok(out)
    }
}

/// Steps that do the same to a tensor of any rank: elementwise, their other operands (if any)
/// other activations of the decoder or a single number.
const ANY_RANK_OPS: &[&str] = &[
    "Add",
    "Sub",
    "Mul",
    "Div",
    "LeakyRelu",
    "Relu",
    "Tanh",
    "Sigmoid",
    "Identity",
    "Clip",
];

/// A decoder's 1-D convolutions as 2-D ones of height 1 (see the module's doc): the rewritten
/// convolution nodes, by index in the graph, and the weights that take a height of 1.
struct Conv2d {
    nodes: HashMap<usize, Vec<u8>>,
    weights: HashSet<String>,
}

impl Conv2d {
    /// The rewrite of `part` (fed `latent`, `[1, channels, frames]`), or `None` where a step
    /// would not do the same with one more axis: every activation then has the height axis at
    /// the same place, so elementwise steps between them broadcast as before.
    fn plan(graph: &Graph, part: &Part, latent: &str) -> Result<Option<Self>, Malformed> {
        let mut activations: HashSet<&str> = HashSet::from([latent]);
        activations
            .extend((part.nodes.iter()).flat_map(|&i| graph.nodes[i].outputs.iter().copied()));
        let outputs: HashSet<&str> = graph.outputs.iter().map(|o| o.name).collect();
        let weights: HashMap<&str, &[u8]> = graph
            .initializers
            .iter()
            .map(|t| (t.name, t.body))
            .collect();
        let dims = |name: &str| -> Result<Option<Vec<i64>>, Malformed> {
            match weights.get(name) {
                Some(body) => Ok(Some(ints(&fields(body)?, TENSOR_DIMS)?)),
                None => Ok(None),
            }
        };
        let mut plan = Conv2d {
            nodes: HashMap::new(),
            weights: HashSet::new(),
        };
        let mut other_inputs = Vec::new();
        for &i in &part.nodes {
            let node = &graph.nodes[i];
            let node_fields = fields(node.raw)?;
            let domain = node_fields.iter().find(|f| f.number == NODE_DOMAIN);
            if !matches!(
                domain.map(Field::text).transpose()?,
                None | Some("" | "ai.onnx")
            ) {
                return Ok(None);
            }
            match (node.op_type, &node.inputs[..]) {
                ("Conv" | "ConvTranspose", [x, w, bias @ ..]) => {
                    let is_weight =
                        |name: &str| !activations.contains(name) && weights.contains_key(name);
                    if !activations.contains(x)
                        || !is_weight(w)
                        || dims(w)?.map(|d| d.len()) != Some(3)
                        || bias.len() > 1
                        || bias.iter().any(|b| !b.is_empty() && !is_weight(b))
                    {
                        return Ok(None);
                    }
                    let Some(rewritten) = conv_2d(&node_fields)? else {
                        return Ok(None);
                    };
                    plan.nodes.insert(i, rewritten);
                    plan.weights.insert(w.to_string());
                }
                // Piper's last step adds an axis to the samples: any rank will do for an output.
                ("Unsqueeze", [x, ..]) if node.outputs.iter().all(|o| outputs.contains(o)) => {
                    if !activations.contains(x) {
                        return Ok(None);
                    }
                }
                (op, inputs) if ANY_RANK_OPS.contains(&op) => {
                    for &input in inputs {
                        if input.is_empty() || activations.contains(input) {
                            continue;
                        }
                        let one_number =
                            dims(input)?.is_some_and(|d| d.iter().product::<i64>() == 1);
                        if !one_number {
                            return Ok(None);
                        }
                        other_inputs.push(input);
                    }
                }
                _ => return Ok(None),
            }
        }
        // A weight read as a number elsewhere keeps its shape.
        if other_inputs.iter().any(|w| plan.weights.contains(*w)) {
            return Ok(None);
        }
        Ok(Some(plan))
    }
}

/// A 1-D `Conv` or `ConvTranspose` node as a 2-D one of height 1: its attributes of one value per
/// axis get a first axis of kernel 1, stride 1, dilation 1 and no padding. `None` for an
/// attribute it cannot carry over (an explicit `output_shape`, a length that is not 1-D's).
fn conv_2d(node: &[Field]) -> Result<Option<Vec<u8>>, Malformed> {
    let mut out = Vec::new();
    for f in node {
        if f.number != NODE_ATTRIBUTE {
            out.extend_from_slice(f.raw);
            continue;
        }
        let attribute = fields(f.body()?)?;
        let name = match attribute.iter().find(|a| a.number == ATTRIBUTE_NAME) {
            Some(a) => a.text()?,
            None => "",
        };
        let values = ints(&attribute, ATTRIBUTE_INTS)?;
        let values = match (name, &values[..]) {
            ("kernel_shape" | "strides" | "dilations", &[v]) => vec![1, v],
            ("output_padding", &[v]) => vec![0, v],
            ("pads", &[begin, end]) => vec![0, begin, 0, end],
            ("kernel_shape" | "strides" | "dilations" | "output_padding" | "pads", _)
            | ("output_shape", _) => return Ok(None),
            _ => {
                out.extend_from_slice(f.raw);
                continue;
            }
        };
        let mut rewritten = Vec::new();
        put_bytes(&mut rewritten, ATTRIBUTE_NAME, name.as_bytes());
        put_ints(&mut rewritten, ATTRIBUTE_INTS, &values);
        put_varint(&mut rewritten, u64::from(ATTRIBUTE_TYPE) << 3);
        put_varint(&mut rewritten, ATTRIBUTE_TYPE_INTS);
        put_bytes(&mut out, NODE_ATTRIBUTE, &rewritten);
    }
    Ok(Some(out))
}

/// A 1-D convolution's weight, `[a, b, kernel]`, as a 2-D one's, `[a, b, 1, kernel]`: the same
/// numbers in the same order, only the dims differ.
fn with_height_one(tensor: &[u8]) -> Result<Vec<u8>, Malformed> {
    let tensor = fields(tensor)?;
    let &[a, b, kernel] = &ints(&tensor, TENSOR_DIMS)?[..] else {
        return Err(Malformed("a convolution's weight is not 3-D"));
    };
    let mut out = Vec::new();
    put_ints(&mut out, TENSOR_DIMS, &[a, b, 1, kernel]);
    for f in tensor.iter().filter(|f| f.number != TENSOR_DIMS) {
        out.extend_from_slice(f.raw);
    }
    Ok(out)
}

/// A weight of at least this size is left in the voice's file (see [`split`]); smaller ones
/// (shapes, scalars: most of the voice's 401 by count, 0.1 % by size) are copied.
pub const EXTERNAL_MIN_BYTES: usize = 1024;

/// A `TensorProto` whose data (`raw_data`, if [`EXTERNAL_MIN_BYTES`] or more) is left where it
/// is in `model`, the bytes of the file `file`: ONNX's external data, by offset and length.
fn external_weight<'b>(
    body: &'b [u8],
    model: &[u8],
    file: &str,
) -> Result<Cow<'b, [u8]>, Malformed> {
    let tensor = fields(body)?;
    let Some(data) = tensor
        .iter()
        .find(|f| f.number == TENSOR_RAW_DATA && f.wire == WIRE_LEN)
        .filter(|f| f.value.len() >= EXTERNAL_MIN_BYTES)
    else {
        return Ok(Cow::Borrowed(body));
    };
    // Where the data sits in the file: every slice here was cut from `model`.
    let offset = data.value.as_ptr() as usize - model.as_ptr() as usize;
    let mut out = Vec::with_capacity(body.len().min(256) + 64);
    for f in &tensor {
        if !matches!(
            f.number,
            TENSOR_RAW_DATA | TENSOR_EXTERNAL_DATA | TENSOR_DATA_LOCATION
        ) {
            out.extend_from_slice(f.raw);
        }
    }
    for (key, value) in [
        ("location", file.to_string()),
        ("offset", offset.to_string()),
        ("length", data.value.len().to_string()),
    ] {
        let mut entry = Vec::new();
        put_bytes(&mut entry, 1, key.as_bytes());
        put_bytes(&mut entry, 2, value.as_bytes());
        put_bytes(&mut out, TENSOR_EXTERNAL_DATA, &entry);
    }
    put_varint(&mut out, u64::from(TENSOR_DATA_LOCATION) << 3);
    put_varint(&mut out, DATA_LOCATION_EXTERNAL);
    Ok(Cow::Owned(out))
}

/// A piece of a message to write: a field as it was, or a message under a field number.
enum Piece<'b> {
    Raw(&'b [u8]),
    Field(u32, Cow<'b, [u8]>),
}

impl Piece<'_> {
    fn len(&self) -> usize {
        match self {
            Piece::Raw(raw) => raw.len(),
            Piece::Field(number, body) => {
                tag_len(*number) + varint_len(body.len() as u64) + body.len()
            }
        }
    }

    fn write(&self, out: &mut Vec<u8>) {
        match self {
            Piece::Raw(raw) => out.extend_from_slice(raw),
            Piece::Field(number, body) => put_bytes(out, *number, body),
        }
    }
}

fn tag_len(number: u32) -> usize {
    varint_len(u64::from(number) << 3)
}

fn varint_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

/// The windows a clause of `frames` latent frames is decoded in by `sessions` sessions side by
/// side, none longer than `window_frames`: for each, the frames whose samples it gives
/// (`keep`) and the frames it runs on (`run`: `keep` with up to [`CONTEXT_FRAMES`] more on each
/// side). As many windows as sessions, or a multiple, where the clause has `min_frames` for
/// each; equal windows (to a frame), so the last is not a sliver and the sessions finish
/// together.
pub fn windows(
    frames: usize,
    window_frames: usize,
    sessions: usize,
    min_frames: usize,
) -> Vec<(std::ops::Range<usize>, std::ops::Range<usize>)> {
    let sessions = sessions.max(1);
    let count = frames
        .div_ceil(window_frames.max(1))
        .next_multiple_of(sessions)
        .min(frames / min_frames.max(1))
        .max(frames.div_ceil(window_frames.max(1)))
        .max(1);
    let bound = |i: usize| i * frames / count;
    (0..count)
        .map(|i| {
            let keep = bound(i)..bound(i + 1);
            let run =
                keep.start.saturating_sub(CONTEXT_FRAMES)..(keep.end + CONTEXT_FRAMES).min(frames);
            (keep, run)
        })
        .filter(|(keep, _)| !keep.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(inputs: &[&str], outputs: &[&str], op: &str) -> Vec<u8> {
        let mut n = Vec::new();
        for i in inputs {
            put_bytes(&mut n, NODE_INPUT, i.as_bytes());
        }
        for o in outputs {
            put_bytes(&mut n, NODE_OUTPUT, o.as_bytes());
        }
        put_bytes(&mut n, NODE_OP_TYPE, op.as_bytes());
        n
    }

    /// A float tensor of `len` bytes, each byte its name's length.
    fn tensor(name: &str, len: usize) -> Vec<u8> {
        let mut t = Vec::new();
        put_varint(&mut t, 1 << 3); // dims
        put_varint(&mut t, len as u64 / 4);
        put_bytes(&mut t, TENSOR_NAME, name.as_bytes());
        put_bytes(&mut t, TENSOR_RAW_DATA, &vec![name.len() as u8; len]);
        t
    }

    /// A voice in miniature: x → encode → latent → conv_pre (dec.conv_pre.weight) → out.
    fn model(decoder_weight: &str, extra_op: Option<&str>) -> Vec<u8> {
        model_with(decoder_weight, extra_op, "latent")
    }

    /// The same, its decoder given `decoder_input` as well as the latent frames.
    fn model_with(decoder_weight: &str, extra_op: Option<&str>, decoder_input: &str) -> Vec<u8> {
        let mut g = Vec::new();
        put_bytes(&mut g, 2, b"main_graph");
        put_bytes(
            &mut g,
            GRAPH_NODE,
            &node(&["x", "enc.w"], &["latent"], "Mul"),
        );
        put_bytes(
            &mut g,
            GRAPH_NODE,
            &node(&["latent", decoder_weight], &["y"], "Conv"),
        );
        put_bytes(
            &mut g,
            GRAPH_NODE,
            &node(&["y", decoder_input], &["out"], "Add"),
        );
        if let Some(op) = extra_op {
            put_bytes(&mut g, GRAPH_NODE, &node(&["x"], &["z"], op));
        }
        put_bytes(&mut g, GRAPH_INITIALIZER, &tensor("enc.w", 4));
        put_bytes(&mut g, GRAPH_INITIALIZER, &tensor(decoder_weight, 4096));
        put_bytes(&mut g, GRAPH_INPUT, &float_tensor_info("x"));
        put_bytes(&mut g, GRAPH_OUTPUT, &float_tensor_info("out"));
        put_bytes(&mut g, GRAPH_VALUE_INFO, &float_tensor_info("y"));
        let mut m = Vec::new();
        put_varint(&mut m, 1 << 3); // ir_version
        put_varint(&mut m, 8);
        put_bytes(&mut m, MODEL_GRAPH, &g);
        put_bytes(&mut m, 14, b"kept as it was"); // metadata_props, not read
        m
    }

    /// A part's op types, then the names of its weights, inputs, outputs and value types.
    fn names(buf: &[u8]) -> [Vec<String>; 5] {
        let top = fields(buf).unwrap();
        let g = Graph::read(top.iter().find(|f| f.number == MODEL_GRAPH).unwrap().value).unwrap();
        let list = |v: &[Named]| v.iter().map(|n| n.name.to_string()).collect::<Vec<_>>();
        [
            g.nodes.iter().map(|n| n.op_type.to_string()).collect(),
            list(&g.initializers),
            list(&g.inputs),
            list(&g.outputs),
            list(&g.value_info),
        ]
    }

    #[test]
    fn a_voice_is_cut_at_its_decoders_input_and_each_part_keeps_what_it_needs() {
        let m = model("dec.conv_pre.weight", None);
        let split = split(&m, None).unwrap().expect("has a decoder");
        assert_eq!(split.latent, "latent");
        let [ops, weights, inputs, outputs, infos] = names(&split.front);
        assert_eq!(ops, ["Mul"]);
        assert_eq!(weights, ["enc.w"]);
        assert_eq!((inputs, outputs), (vec!["x".into()], vec!["latent".into()]));
        assert!(infos.is_empty());
        let [ops, weights, inputs, outputs, infos] = names(&split.decoder);
        assert_eq!(ops, ["Conv", "Add"]);
        assert_eq!(weights, ["dec.conv_pre.weight"]);
        assert_eq!(
            (inputs, outputs),
            (vec!["latent".into()], vec!["out".into()])
        );
        assert_eq!(infos, ["y"]);
        // The fields the cut does not read are copied as they were.
        for part in [&split.front, &split.decoder] {
            let top = fields(part).unwrap();
            assert_eq!(top.len(), 3);
            assert_eq!(top[2].value, b"kept as it was");
        }
    }

    #[test]
    fn large_weights_are_named_by_their_place_in_the_voices_file_and_small_ones_copied() {
        let m = model("dec.conv_pre.weight", None);
        let split = split(&m, Some("voice.onnx"))
            .unwrap()
            .expect("has a decoder");
        let weight = |part: &[u8]| {
            let top = fields(part).unwrap();
            let graph = top.iter().find(|f| f.number == MODEL_GRAPH).unwrap().value;
            let tensor = fields(graph)
                .unwrap()
                .into_iter()
                .find(|f| f.number == GRAPH_INITIALIZER)
                .unwrap()
                .value;
            fields(tensor)
                .unwrap()
                .into_iter()
                .map(|f| (f.number, f.value.to_vec()))
                .collect::<Vec<_>>()
        };
        // The front's 4-byte weight is copied as it was.
        let small = weight(&split.front);
        assert!(small.contains(&(TENSOR_RAW_DATA, vec![5; 4])));
        // The decoder's 4096-byte weight is left in the file: where, and how long.
        let large = weight(&split.decoder);
        assert!(large.iter().all(|(n, _)| *n != TENSOR_RAW_DATA));
        assert!(large.contains(&(TENSOR_NAME, b"dec.conv_pre.weight".to_vec())));
        let entry = |key: &str| {
            large
                .iter()
                .filter(|(n, _)| *n == TENSOR_EXTERNAL_DATA)
                .map(|(_, e)| {
                    fields(e)
                        .unwrap()
                        .iter()
                        .map(|f| f.text().unwrap().to_string())
                        .collect::<Vec<_>>()
                })
                .find(|kv| kv[0] == key)
                .map(|kv| kv[1].clone())
                .unwrap()
        };
        assert_eq!(entry("location"), "voice.onnx");
        let offset: usize = entry("offset").parse().unwrap();
        assert_eq!(entry("length"), "4096");
        assert_eq!(
            &m[offset..offset + 4096],
            &[19u8; 4096][..],
            "the weight's own bytes"
        );
        assert!(large.contains(&(TENSOR_DATA_LOCATION, vec![DATA_LOCATION_EXTERNAL as u8])));
        assert!(split.decoder.len() < 1024, "{} bytes", split.decoder.len());
    }

    #[test]
    fn a_voice_without_a_known_decoder_or_with_control_flow_or_other_inputs_runs_whole() {
        assert!(split(&model("decoder.w", None), None).unwrap().is_none());
        assert!(
            split(&model("dec.conv_pre.weight", Some("If")), None)
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn bytes_that_are_not_a_model_are_an_error_not_a_panic() {
        let m = model("dec.conv_pre.weight", None);
        for cut in [1, 5, m.len() / 2, m.len() - 1] {
            assert!(split(&m[..cut], None).is_err(), "cut at {cut}");
        }
        assert!(split(b"", None).is_err());
        assert!(split(&[0xff; 12], None).is_err());
    }

    fn attribute(name: &str, ints: &[i64]) -> Vec<u8> {
        let mut a = Vec::new();
        put_bytes(&mut a, ATTRIBUTE_NAME, name.as_bytes());
        put_ints(&mut a, ATTRIBUTE_INTS, ints);
        put_varint(&mut a, u64::from(ATTRIBUTE_TYPE) << 3);
        put_varint(&mut a, ATTRIBUTE_TYPE_INTS);
        a
    }

    fn node_with(inputs: &[&str], output: &str, op: &str, attributes: &[Vec<u8>]) -> Vec<u8> {
        let mut n = node(inputs, &[output], op);
        for a in attributes {
            put_bytes(&mut n, NODE_ATTRIBUTE, a);
        }
        n
    }

    /// A float tensor of the given dims (bytes: each its name's length).
    fn tensor_of(name: &str, dims: &[i64]) -> Vec<u8> {
        let mut t = Vec::new();
        put_ints(&mut t, TENSOR_DIMS, dims);
        put_bytes(&mut t, TENSOR_NAME, name.as_bytes());
        let len = 4 * dims.iter().product::<i64>() as usize;
        put_bytes(&mut t, TENSOR_RAW_DATA, &vec![name.len() as u8; len]);
        t
    }

    /// A voice whose decoder is Piper's in miniature: conv_pre, LeakyRelu, an upsampling
    /// ConvTranspose, a division by a number, tanh and the last Unsqueeze; with `odd_step` (a
    /// node and its weights) before the tanh.
    fn piper_like(odd_step: Option<(Vec<u8>, Vec<Vec<u8>>)>) -> Vec<u8> {
        let conv = |k: i64, s: i64, p: i64| {
            vec![
                attribute("kernel_shape", &[k]),
                attribute("strides", &[s]),
                attribute("pads", &[p, p]),
                attribute("dilations", &[1]),
            ]
        };
        let mut g = Vec::new();
        let nodes = [
            node(&["x", "enc.w"], &["latent"], "Mul"),
            node_with(
                &["latent", "dec.conv_pre.weight", "dec.conv_pre.bias"],
                "a",
                "Conv",
                &conv(7, 1, 3),
            ),
            node_with(&["a"], "b", "LeakyRelu", &[]),
            node_with(
                &["b", "dec.ups.0.weight", "dec.ups.0.bias"],
                "c",
                "ConvTranspose",
                &conv(16, 8, 4),
            ),
            node_with(&["c", "two"], "d", "Div", &[]),
        ];
        for n in &nodes {
            put_bytes(&mut g, GRAPH_NODE, n);
        }
        let mut last = "d";
        if let Some((n, _)) = &odd_step {
            put_bytes(&mut g, GRAPH_NODE, n);
            last = "e";
        }
        put_bytes(&mut g, GRAPH_NODE, &node_with(&[last], "f", "Tanh", &[]));
        put_bytes(
            &mut g,
            GRAPH_NODE,
            &node_with(&["f", "axis"], "out", "Unsqueeze", &[]),
        );
        for t in [
            tensor_of("enc.w", &[1]),
            tensor_of("dec.conv_pre.weight", &[8, 4, 7]),
            tensor_of("dec.conv_pre.bias", &[8]),
            tensor_of("dec.ups.0.weight", &[8, 4, 16]),
            tensor_of("dec.ups.0.bias", &[4]),
            tensor_of("two", &[]),
            tensor_of("axis", &[1]),
        ] {
            put_bytes(&mut g, GRAPH_INITIALIZER, &t);
        }
        for t in odd_step.iter().flat_map(|(_, weights)| weights) {
            put_bytes(&mut g, GRAPH_INITIALIZER, t);
        }
        put_bytes(&mut g, GRAPH_INPUT, &float_tensor_info("x"));
        put_bytes(&mut g, GRAPH_OUTPUT, &float_tensor_info("out"));
        put_bytes(&mut g, GRAPH_VALUE_INFO, &float_tensor_info("c"));
        let mut m = Vec::new();
        put_bytes(&mut m, MODEL_GRAPH, &g);
        m
    }

    /// Integer lists by name: a node's attributes, or weights' dims.
    type Lists = HashMap<String, Vec<i64>>;

    /// The decoder part's nodes (op type and attributes) and weights' dims.
    fn decoder_of(split: &Split) -> (Vec<(String, Lists)>, Lists) {
        let top = fields(&split.decoder).unwrap();
        let g = Graph::read(top.iter().find(|f| f.number == MODEL_GRAPH).unwrap().value).unwrap();
        let nodes = (g.nodes.iter())
            .map(|n| {
                let attributes = (fields(n.raw).unwrap().iter())
                    .filter(|f| f.number == NODE_ATTRIBUTE)
                    .map(|f| {
                        let a = fields(f.value).unwrap();
                        let name = a.iter().find(|x| x.number == ATTRIBUTE_NAME).unwrap();
                        (
                            name.text().unwrap().to_string(),
                            ints(&a, ATTRIBUTE_INTS).unwrap(),
                        )
                    })
                    .collect();
                (n.op_type.to_string(), attributes)
            })
            .collect();
        let weights = (g.initializers.iter())
            .map(|t| {
                (
                    t.name.to_string(),
                    ints(&fields(t.body).unwrap(), TENSOR_DIMS).unwrap(),
                )
            })
            .collect();
        (nodes, weights)
    }

    #[test]
    fn a_decoder_of_1d_convolutions_and_steps_of_any_rank_is_made_2d() {
        let split = split(&piper_like(None), Some("voice.onnx"))
            .unwrap()
            .unwrap();
        assert!(split.decoder_2d);
        let (nodes, weights) = decoder_of(&split);
        let ops: Vec<&str> = nodes.iter().map(|(op, _)| op.as_str()).collect();
        assert_eq!(
            ops,
            [
                "Conv",
                "LeakyRelu",
                "ConvTranspose",
                "Div",
                "Tanh",
                "Unsqueeze"
            ]
        );
        let conv = &nodes[0].1;
        assert_eq!(conv["kernel_shape"], [1, 7]);
        assert_eq!(conv["strides"], [1, 1]);
        assert_eq!(conv["pads"], [0, 3, 0, 3]);
        assert_eq!(conv["dilations"], [1, 1]);
        let up = &nodes[2].1;
        assert_eq!(
            (&up["kernel_shape"], &up["strides"]),
            (&vec![1, 16], &vec![1, 8])
        );
        assert_eq!(up["pads"], [0, 4, 0, 4]);
        // Weights get a height of 1; the biases and the number keep their shapes.
        assert_eq!(weights["dec.conv_pre.weight"], [8, 4, 1, 7]);
        assert_eq!(weights["dec.ups.0.weight"], [8, 4, 1, 16]);
        assert_eq!(weights["dec.conv_pre.bias"], [8]);
        assert_eq!(weights["two"], Vec::<i64>::new());
        // The declared shapes were 1-D's: the input and output are declared without one, and
        // the values' types are left out.
        let [_, _, inputs, outputs, infos] = names(&split.decoder);
        assert_eq!(
            (inputs, outputs),
            (vec!["latent".into()], vec!["out".into()])
        );
        assert!(infos.is_empty());
        // The front is as it was.
        let [ops, ..] = names(&split.front);
        assert_eq!(ops, ["Mul"]);
    }

    #[test]
    fn a_decoder_with_a_step_that_depends_on_rank_stays_1d() {
        let odd_steps = [
            // A bias of one number per channel, [C, 1]: would broadcast along the height.
            (
                node_with(&["d", "per_channel"], "e", "Add", &[]),
                vec![tensor_of("per_channel", &[4, 1])],
            ),
            // A step that names axes.
            (
                node_with(&["d", "shape"], "e", "Reshape", &[]),
                vec![tensor_of("shape", &[3])],
            ),
            // A convolution with an explicit output shape.
            (
                node_with(
                    &["d", "w"],
                    "e",
                    "ConvTranspose",
                    &[attribute("output_shape", &[64])],
                ),
                vec![tensor_of("w", &[4, 4, 3])],
            ),
            // A convolution whose weight is computed.
            (node_with(&["d", "d"], "e", "Conv", &[]), vec![]),
            // A 2-D convolution already.
            (
                node_with(
                    &["d", "w"],
                    "e",
                    "Conv",
                    &[attribute("kernel_shape", &[3, 3])],
                ),
                vec![tensor_of("w", &[4, 4, 3])],
            ),
        ];
        for (i, odd) in odd_steps.into_iter().enumerate() {
            let split = split(&piper_like(Some(odd)), None)
                .unwrap()
                .expect("still cut");
            assert!(!split.decoder_2d, "odd step {i}");
            let (_, weights) = decoder_of(&split);
            assert_eq!(weights["dec.conv_pre.weight"], [8, 4, 7], "odd step {i}");
            let [.., infos] = names(&split.decoder);
            assert_eq!(infos, ["c"], "odd step {i}: value types kept");
        }
    }

    #[test]
    fn windows_cover_the_clause_once_with_context_inside_it() {
        assert_eq!(windows(100, 256, 1, 24), vec![(0..100, 0..100)]);
        let w = windows(689, 256, 1, 24);
        assert_eq!(w.len(), 3);
        assert_eq!(w[0], (0..229, 0..245));
        assert_eq!(w[1], (229..459, 213..475));
        assert_eq!(w[2], (459..689, 443..689));
        for sessions in [1, 2, 3, 4] {
            for frames in [0, 1, 2, 17, 47, 48, 191, 192, 193, 255, 256, 257, 1000] {
                let w = windows(frames, 40, sessions, 24);
                let kept: Vec<usize> = w.iter().flat_map(|(k, _)| k.clone()).collect();
                assert_eq!(kept, (0..frames).collect::<Vec<_>>());
                assert!(w.iter().all(|(k, r)| !k.is_empty()
                    && k.len() <= 40
                    && r.start == k.start.saturating_sub(CONTEXT_FRAMES)
                    && r.end == (k.end + CONTEXT_FRAMES).min(frames)));
                let (shortest, longest) = (
                    w.iter().map(|(k, _)| k.len()).min(),
                    w.iter().map(|(k, _)| k.len()).max(),
                );
                assert!(
                    longest.unwrap_or(0) - shortest.unwrap_or(0) <= 1,
                    "equal windows"
                );
            }
        }
    }

    #[test]
    fn every_session_gets_a_window_where_the_clause_is_long_enough() {
        // One window for each of two sessions, or a multiple of two.
        assert_eq!(windows(300, 192, 2, 24).len(), 2);
        assert_eq!(windows(500, 192, 2, 24).len(), 4);
        assert_eq!(windows(100, 192, 2, 24).len(), 2);
        assert_eq!(windows(100, 192, 4, 24).len(), 4);
        // Not windows shorter than the least: a short clause runs on fewer sessions.
        assert_eq!(windows(47, 192, 2, 24).len(), 1);
        assert_eq!(windows(60, 192, 4, 24).len(), 2);
        assert!(windows(0, 192, 2, 24).is_empty());
    }
}
