//! Audio as transcription needs it: 16 kHz mono samples, read from raw PCM, and written
//! as WAV for services that take a file.

use std::path::Path;

use crate::windows::{SAMPLE_RATE, Window};

/// Reads `window` of a raw signed 16-bit little-endian mono PCM file as samples in
/// [-1, 1]. A window past the end of the file is cut at the end.
pub fn read_pcm_window(path: &Path, window: Window) -> std::io::Result<Vec<f32>> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = std::fs::File::open(path)?;
    file.seek(SeekFrom::Start(window.start as u64 * 2))?;
    let mut bytes = Vec::with_capacity((window.end - window.start) * 2);
    file.take((window.end - window.start) as u64 * 2)
        .read_to_end(&mut bytes)?;
    Ok(pcm_to_samples(&bytes))
}

/// Samples from signed 16-bit little-endian PCM bytes.
pub fn pcm_to_samples(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]) as f32 / 32768.0)
        .collect()
}

/// A 16 kHz mono 16-bit WAV file of `samples`.
pub fn wav_bytes(samples: &[f32]) -> Vec<u8> {
    let data_len = (samples.len() * 2) as u32;
    let mut out = Vec::with_capacity(44 + data_len as usize);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + data_len).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes()); // fmt chunk size
    out.extend_from_slice(&1u16.to_le_bytes()); // PCM
    out.extend_from_slice(&1u16.to_le_bytes()); // mono
    out.extend_from_slice(&(SAMPLE_RATE as u32).to_le_bytes());
    out.extend_from_slice(&(SAMPLE_RATE as u32 * 2).to_le_bytes()); // byte rate
    out.extend_from_slice(&2u16.to_le_bytes()); // block align
    out.extend_from_slice(&16u16.to_le_bytes()); // bits per sample
    out.extend_from_slice(b"data");
    out.extend_from_slice(&data_len.to_le_bytes());
    for &s in samples {
        let v = (s.clamp(-1.0, 1.0) * 32767.0).round() as i16;
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

/// Samples of a WAV file holding 16 kHz mono 16-bit PCM (what [`wav_bytes`] writes),
/// or `None` for anything else.
pub fn wav_samples(bytes: &[u8]) -> Option<Vec<f32>> {
    let fmt_ok = bytes.len() >= 44
        && &bytes[0..4] == b"RIFF"
        && &bytes[8..16] == b"WAVEfmt "
        && u16::from_le_bytes([bytes[20], bytes[21]]) == 1
        && u16::from_le_bytes([bytes[22], bytes[23]]) == 1
        && u32::from_le_bytes([bytes[24], bytes[25], bytes[26], bytes[27]]) == SAMPLE_RATE as u32
        && u16::from_le_bytes([bytes[34], bytes[35]]) == 16
        && &bytes[36..40] == b"data";
    fmt_ok.then(|| pcm_to_samples(&bytes[44..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wav_round_trips() {
        let samples = [0.0, 0.5, -0.5, 1.0, -1.0];
        let wav = wav_bytes(&samples);
        assert_eq!(wav.len(), 44 + 10);
        let back = wav_samples(&wav).unwrap();
        for (a, b) in samples.iter().zip(&back) {
            assert!((a - b).abs() < 1e-4, "{a} {b}");
        }
        assert!(wav_samples(b"not a wav file at all, not at all, no no no").is_none());
    }

    #[test]
    fn pcm_windows_are_read_from_their_offset() {
        let dir = std::env::temp_dir().join(format!("idempipe-pcm-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("a.pcm");
        let bytes: Vec<u8> = (0i16..100).flat_map(|v| (v * 100).to_le_bytes()).collect();
        std::fs::write(&path, bytes).unwrap();
        let got = read_pcm_window(&path, Window { start: 10, end: 13 }).unwrap();
        assert_eq!(
            got,
            vec![1000.0 / 32768.0, 1100.0 / 32768.0, 1200.0 / 32768.0]
        );
        let tail = read_pcm_window(
            &path,
            Window {
                start: 98,
                end: 120,
            },
        )
        .unwrap();
        assert_eq!(tail.len(), 2);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
