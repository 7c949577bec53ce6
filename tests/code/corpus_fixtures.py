"""Tiny corpora laid out like the real releases, with real (short) audio, for the adapter tests."""

from __future__ import annotations

import csv
import json
from fractions import Fraction
from pathlib import Path

import numpy as np
import soundfile as sf

SR = 16000


def tone(seconds: float = 0.5, sr: int = SR, freq: float = 220.0, channels: int = 1) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    x = (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    return np.stack([x] * channels, axis=1) if channels > 1 else x


def write_wav(path: Path, seconds: float = 0.5, sr: int = SR, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, tone(seconds, sr, **kw), sr)
    return path


def write_array(path: Path, data: np.ndarray, sr: int = SR, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, data, sr, **kw)
    return path


def write_corrupt(path: Path) -> Path:
    """A .wav whose header libsndfile rejects."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunk, not a wave file")
    return path


# -- RAVDESS -----------------------------------------------------------------
RAVDESS_SPEECH = [  # (actor, emotion, intensity, statement, repetition)
    (1, "01", "01", "01", "01"),  # neutral
    (1, "02", "02", "02", "01"),  # calm, strong
    (2, "06", "01", "01", "02"),  # fearful
    (2, "07", "02", "02", "02"),  # disgust
    (21, "08", "01", "01", "01"),  # surprised
    (24, "03", "02", "02", "01"),  # happy
]


def make_ravdess(root: Path) -> dict:
    for actor, emo, inten, stmt, rep in RAVDESS_SPEECH:
        write_wav(root / f"Actor_{actor:02d}" / f"03-01-{emo}-{inten}-{stmt}-{rep}-{actor:02d}.wav")
    write_wav(root / "Actor_01" / "03-02-03-01-01-01-01.wav")  # song: skipped
    write_wav(root / "Actor_02" / "notes.wav")  # bad name
    write_wav(root / "Actor_02" / "03-01-09-01-01-01-02.wav")  # emotion 09 does not exist
    write_corrupt(root / "Actor_24" / "03-01-05-01-01-01-24.wav")
    return {"records": len(RAVDESS_SPEECH), "skipped": 1, "quarantined": 3}


# -- EmoDB -------------------------------------------------------------------
def make_emodb(root: Path) -> None:
    for name in ["03a01Wa", "08a02La", "09b01Ea", "12a04Ab", "14b10Fc", "15a05Tb", "16a07Na", "10b09Lc"]:
        write_wav(root / "wav" / f"{name}.wav")
    write_wav(root / "wav" / "99a01Wa.wav")  # unknown speaker
    (root / "wav" / "empty.wav").write_bytes(b"")  # bad name wins before the header is read
    write_corrupt(root / "wav" / "11a01Wd.wav")
    (root / "lablaut").mkdir()
    (root / "lablaut" / "03a01Wa.lab").write_text("not audio")  # other release folders are ignored


# -- IEMOCAP -----------------------------------------------------------------
IEMOCAP_HEADER = "% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]\n\n"


def _iemocap_dialog(session_dir: Path, dialog: str, utts: list[tuple[str, str, str]], missing: tuple[str, ...] = ()) -> None:
    """utts: (utterance, label, text). Writes evaluation, transcription and wavs (except `missing`)."""
    ev = [IEMOCAP_HEADER]
    tr = []
    for i, (utt, label, text) in enumerate(utts):
        start, end = 1.5 + 3 * i, 3.25 + 3 * i
        ev.append(f"[{start:.4f} - {end:.4f}]\t{utt}\t{label}\t[2.5000, 3.0000, 3.5000]\n")
        ev.append("C-E1:\tNeutral;\t()\nA-E1:\tval 3; act 3; dom  3;\t()\n\n")
        tr.append(f"{utt} [{start:08.4f}-{end:08.4f}]: {text}\n")
        if utt not in missing:
            write_wav(session_dir / "sentences" / "wav" / dialog / f"{utt}.wav")
    (session_dir / "dialog" / "EmoEvaluation").mkdir(parents=True, exist_ok=True)
    (session_dir / "dialog" / "EmoEvaluation" / "Categorical").mkdir(exist_ok=True)
    (session_dir / "dialog" / "EmoEvaluation" / f"{dialog}.txt").write_text("".join(ev))
    (session_dir / "dialog" / "transcriptions").mkdir(parents=True, exist_ok=True)
    tr.append("M: [BREATHING]\n")
    (session_dir / "dialog" / "transcriptions" / f"{dialog}.txt").write_text("".join(tr))


def make_iemocap(root: Path) -> Path:
    release = root / "IEMOCAP_full_release"
    _iemocap_dialog(release / "Session1", "Ses01F_impro01", [
        ("Ses01F_impro01_F000", "neu", "Excuse me."),
        ("Ses01F_impro01_M000", "exc", "Do you have your forms?"),
        ("Ses01F_impro01_F001", "fru", "Yeah."),
        ("Ses01F_impro01_M001", "xxx", "Let me see them."),
    ])
    _iemocap_dialog(release / "Session4", "Ses04M_script01_1", [
        ("Ses04M_script01_1_F000", "sad", "I don't know."),
        ("Ses04M_script01_1_M000", "ang", "Come on!"),
    ], missing=("Ses04M_script01_1_M000",))
    _iemocap_dialog(release / "Session5", "Ses05F_impro02", [
        ("Ses05F_impro02_M000", "hap", "That is great news."),
        ("Ses05F_impro02_F000", "sur", "Really?"),
    ])
    write_wav(release / "Session5" / "sentences" / "wav" / "Ses05F_impro02" / "Ses05F_impro02_F001.wav")  # no label
    return release


# -- MELD --------------------------------------------------------------------
MELD_COLUMNS = ["Sr No.", "Utterance", "Speaker", "Emotion", "Sentiment", "Dialogue_ID", "Utterance_ID",
                "Season", "Episode", "StartTime", "EndTime"]


def write_mp4(path: Path, seconds: float = 0.6, rate: int = 48000, audio: bool = True, video: bool = False) -> Path:
    """A real mp4 made with PyAV: AAC stereo audio (like the MELD clips) and/or an MPEG-4 video track."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", format="mp4") as out:
        # Every stream must exist before the first packet is muxed (that writes the header).
        vs = out.add_stream("mpeg4", rate=10) if video else None
        st = out.add_stream("aac", rate=rate, layout="stereo") if audio else None
        if vs is not None:
            vs.width, vs.height, vs.pix_fmt = 32, 32, "yuv420p"
            for i in range(max(1, int(seconds * 10))):
                frame = av.VideoFrame.from_ndarray(np.full((32, 32, 3), i * 20 % 255, np.uint8), format="rgb24")
                frame.pts = i
                out.mux(vs.encode(frame))
            out.mux(vs.encode(None))
        if st is not None:
            samples = tone(seconds, rate, freq=440.0, channels=2).T.copy()  # planar (channels, n)
            for start in range(0, samples.shape[1], 1024):
                frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples[:, start:start + 1024]),
                                                   format="fltp", layout="stereo")
                frame.sample_rate = rate
                frame.pts = start
                frame.time_base = Fraction(1, rate)
                out.mux(st.encode(frame))
            out.mux(st.encode(None))
    return path


def _meld_csv(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as fh:
        w = csv.DictWriter(fh, MELD_COLUMNS)
        w.writeheader()
        for i, row in enumerate(rows, 1):
            w.writerow({"Sr No.": i, "Sentiment": "Neutral", "Season": 8, "Episode": 21,
                        "StartTime": "00:16:16,059", "EndTime": "00:16:21,731", **row})


def make_meld(root: Path) -> None:
    _meld_csv(root / "train_sent_emo.csv", [
        {"Utterance": "Oh my God, you\u00e2\u20ac\u2122re here!", "Speaker": "Rachel", "Emotion": "joy",
         "Sentiment": "Positive", "Dialogue_ID": 0, "Utterance_ID": 0},
        {"Utterance": "Yeah, sure.", "Speaker": "Joey", "Emotion": "neutral", "Dialogue_ID": 0, "Utterance_ID": 1},
        {"Utterance": "Gross.", "Speaker": "Monica", "Emotion": "disgust", "Dialogue_ID": 1, "Utterance_ID": 0},
        {"Utterance": "Where is it?", "Speaker": "Ross", "Emotion": "sadness", "Dialogue_ID": 1, "Utterance_ID": 1},
    ])
    write_mp4(root / "train_splits" / "dia0_utt0.mp4", video=True)
    write_mp4(root / "train_splits" / "dia0_utt1.mp4", rate=44100)
    write_mp4(root / "train_splits" / "dia1_utt0.mp4", audio=False, video=True)  # no audio stream
    # dia1_utt1.mp4 missing, as dia110_utt7 is in the real dev set
    _meld_csv(root / "dev_sent_emo.csv", [
        {"Utterance": "What?!", "Speaker": "Chandler", "Emotion": "surprise", "Dialogue_ID": 0, "Utterance_ID": 0},
        {"Utterance": "No!", "Speaker": "Phoebe", "Emotion": "anger", "Dialogue_ID": 0, "Utterance_ID": 1},
    ])
    write_mp4(root / "dev_splits_complete" / "dia0_utt0.mp4")
    d = root / "dev_splits_complete" / "dia0_utt1.mp4"
    d.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 50)  # corrupt
    _meld_csv(root / "test_sent_emo.csv", [
        {"Utterance": "I'm scared.", "Speaker": "Ross", "Emotion": "fear", "Dialogue_ID": 3, "Utterance_ID": 2},
    ])
    write_mp4(root / "output_repeated_splits_test" / "dia3_utt2.mp4")
    write_mp4(root / "output_repeated_splits_test" / "final_videos_testdia3_utt2.mp4")  # not in the CSV


# -- SAVEE, CREMA-D, TESS -----------------------------------------------------
def make_savee(root: Path) -> None:
    for spk, code in [("DC", "a01"), ("DC", "sa02"), ("JE", "su03"), ("JK", "d01"), ("KL", "n30"), ("KL", "h04")]:
        write_wav(root / "AudioData" / spk / f"{code}.wav")
    write_wav(root / "AudioData" / "JE" / "x99.wav")  # bad name
    write_corrupt(root / "AudioData" / "JK" / "f05.wav")


def make_cremad(root: Path) -> None:
    for name in ["1001_DFA_ANG_XX", "1002_IEO_HAP_HI", "1074_TIE_SAD_LO", "1091_WSI_FEA_MD", "1050_ITH_DIS_XX",
                 "1090_MTI_NEU_XX"]:
        write_wav(root / "AudioWAV" / f"{name}.wav")
    (root / "AudioWAV" / "1076_MTI_SAD_XX.wav").write_bytes(b"")  # the real release has an empty clip too
    write_wav(root / "AudioWAV" / "1001_ABC_ANG_XX.wav")  # unknown sentence
    with (root / "VideoDemographics.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["ActorID", "Age", "Sex", "Race", "Ethnicity"])
        w.writerows([[1001, 51, "Male", "Caucasian", "Not Hispanic"], [1002, 21, "Female", "Caucasian", "Not Hispanic"],
                     [1074, 31, "Female", "African American", "Not Hispanic"]])


def make_tess(root: Path) -> None:
    base = root / "TESS Toronto emotional speech set data"
    for folder, name in [("OAF_angry", "OAF_back_angry"), ("OAF_Pleasant_surprise", "OAF_bath_ps"),
                         ("YAF_pleasant_surprised", "YAF_dog_ps"), ("YAF_disgust", "YAF_dog_disgust"),
                         ("OAF_neutral", "OA_bite_neutral"), ("YAF_sad", "YAF_chair_sad"), ("OAF_Fear", "OAF_chair_fear")]:
        write_wav(base / folder / f"{name}.wav")
    write_wav(base / "YAF_happy" / "YAF_happy.wav")  # bad name
    write_corrupt(base / "YAF_happy" / "YAF_germ_happy.wav")


# -- jsonl, folder, demo ------------------------------------------------------
def write_jsonl_lines(path: Path, rows: list) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def make_broken_folder(root: Path) -> dict[str, str]:
    """The 'folder of deliberately broken files' of issue 2; returns file -> expected outcome at manifest time."""
    expected = {}
    write_wav(root / "angry" / "ok.wav")
    expected["angry/ok.wav"] = "record"
    full = root / "sad" / "truncated.wav"
    write_wav(full, seconds=1.0)
    full.write_bytes(full.read_bytes()[:6000])  # header promises more than the file holds
    expected["sad/truncated.wav"] = "record"  # header is readable; decoding finds the rest
    (root / "sad" / "zero.wav").write_bytes(b"")
    expected["sad/zero.wav"] = "empty"
    write_array(root / "neutral" / "silence.wav", np.zeros(SR, np.float32))
    expected["neutral/silence.wav"] = "record"  # content checks come after the manifest
    nan = tone(1.0)
    nan[100:200] = np.nan
    write_array(root / "fear" / "nan.wav", nan, subtype="FLOAT")
    expected["fear/nan.wav"] = "record"
    write_wav(root / "happy" / "8k_stereo.wav", seconds=1.0, sr=8000, channels=2)
    expected["happy/8k_stereo.wav"] = "record"
    write_array(root / "surprise" / "clip.mp3", tone(1.0, 22050), 22050, format="MP3")
    expected["surprise/clip.mp3"] = "record"
    write_wav(root / "Contempt_or_Disgust" / "ten_minutes.wav", seconds=600.0, sr=8000)
    expected["Contempt_or_Disgust/ten_minutes.wav"] = "too_long"
    write_corrupt(root / "whisper" / "corrupt.wav")
    expected["whisper/corrupt.wav"] = "corrupt"
    (root / "whisper" / "README.txt").write_text("notes")
    expected["whisper/README.txt"] = "unsupported_format"
    write_wav(root / "loose.wav")
    expected["loose.wav"] = "no_label"
    write_wav(root / "frustrated" / "f.wav")
    expected["frustrated/f.wav"] = "excluded"
    (root / "angry" / ".DS_Store").write_bytes(b"\x00")
    expected["angry/.DS_Store"] = "skipped"
    return expected
