"""Train the learned expression predictor (``backend.video.predictor``) from the rendered stills.

    python -m bench.expression_data --sets train              # Cycles renders (seed 1100)
    python -m bench.expression_features --mirror bench/results/expressions/train
    python -m bench.predictor_train [--data bench/results/expressions/train] [--out backend/assets/expression_predictor.npz]

Data: every still of the ``train`` set (random identity, skin, camera per clip; independent
expression, pose and gaze per frame), as MediaPipe saw it and mirrored (the mirrored sample's
targets swap _L and _R). The last 4 clips are held out to pick the epoch. The test clips of the
benchmark (seeds 800 and 900, other skins) are never seen.

Loss: the expression's vertex error on the face in mm (the same for any identity: ICT's expression
shapes do not depend on it) plus a small L1 on the weights (it settles mixes the mesh cannot tell
apart). Deterministic: fixed seeds, one thread. Prints the file's SHA-256, which
``backend.video.predictor.PREDICTOR_SHA256`` must hold.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from backend.video.predictor import DEFAULT_WEIGHTS, GAZE_SCALE, ExpressionPredictor, align, features, score_logits

HELD_OUT = 4


def mirror_keys(names: list[str]) -> np.ndarray:
    """[E] index of each key's mirror image (_L <-> _R; others themselves)."""
    swap = {"_L": "_R", "_R": "_L"}
    return np.array([names.index(n[:-2] + swap[n[-2:]]) if n[-2:] in swap and n[:-2] + swap[n[-2:]] in names
                     else names.index(n) for n in names])


def load_samples(folder: Path, names: list[str]) -> list[dict]:
    """Per clip: points [M, 478, 3], scores [M, 52], weights [M, E], gaze [M, 2, 2] (found frames,
    then mirrored: _L and _R keys swap, so do the eyes, and yaw changes sign)."""
    flip = mirror_keys(names)
    clips = []
    for truth in sorted(folder.glob("clip_[0-9][0-9].json")):
        feats = truth.with_suffix(".features.npz")
        if not feats.is_file():
            continue
        rec = json.loads(truth.read_text())
        w = np.array([[f["expression"][n] for n in names] for f in rec["frames"]])
        g = np.array([f["gaze_deg"] for f in rec["frames"]])
        g_mirror = g[:, ::-1] * np.array([-1.0, 1.0])
        z = np.load(feats)
        parts = [(z["points"], z["scores"], w, g, z["found"])]
        if "mirror_points" in z.files:
            parts.append((z["mirror_points"], z["mirror_scores"], w[:, flip], g_mirror, z["mirror_found"]))
        clips.append({k: np.concatenate([p[i][p[4]] for p in parts])
                      for i, k in enumerate(("points", "scores", "weights", "gaze"))})
    return clips


def procrustes_template(points: np.ndarray, rounds: int = 3) -> np.ndarray:
    """[478, 3] zero-mean, unit-RMS mean shape of [N, 478, 3] frames under similarity alignment."""
    t = points[0] - points[0].mean(0)
    t /= np.sqrt((t ** 2).sum(1).mean())
    for _ in range(rounds):
        aligned, _ = align(points, t)
        t = aligned.mean(0)
        t -= t.mean(0)
        t /= np.sqrt((t ** 2).sum(1).mean())
    return t


def train(clips: list[dict], basis_mm: np.ndarray, names: list[str], hidden: int = 256, epochs: int = 300,
          l1: float = 0.3, seed: int = 0, residual: bool = True, weight_decay: float = 1e-3, noise: float = 0.05,
          dropout: float = 0.0, mse: float = 0.0, log=print) -> tuple[ExpressionPredictor, dict]:
    import torch

    torch.manual_seed(seed)
    torch.set_num_threads(1)
    rng = np.random.default_rng(seed)
    fit_clips, val_clips = clips[:-HELD_OUT], clips[-HELD_OUT:]
    template = procrustes_template(np.concatenate([c["points"] for c in fit_clips]))

    def xy(cs):
        x = np.concatenate([features(c["points"], c["scores"], template) for c in cs])
        base = np.concatenate([score_logits(c["scores"], names) if residual else np.zeros((len(c["scores"]), len(names)))
                               for c in cs])
        return (x, np.concatenate([c["weights"] for c in cs]), np.concatenate([c["gaze"] for c in cs]).reshape(-1, 4) / GAZE_SCALE,
                base)

    x, y, g, b = xy(fit_clips)
    xv, yv, gv, bv = xy(val_clips)
    mean, std = x.mean(0), x.std(0) + 1e-6
    tx = torch.tensor((x - mean) / std, dtype=torch.float32)
    ty = torch.tensor(y, dtype=torch.float32)
    tg = torch.tensor(g, dtype=torch.float32)
    tvx = torch.tensor((xv - mean) / std, dtype=torch.float32)
    tvy = torch.tensor(yv, dtype=torch.float32)
    tvg = torch.tensor(gv, dtype=torch.float32)
    tb, tvb = torch.tensor(b, dtype=torch.float32), torch.tensor(bv, dtype=torch.float32)
    e = len(names)
    basis = torch.tensor(basis_mm.reshape(len(names), -1, 3), dtype=torch.float32)
    net = torch.nn.Sequential(torch.nn.Dropout(dropout), torch.nn.Linear(x.shape[1], hidden), torch.nn.ReLU(),
                              torch.nn.Dropout(dropout), torch.nn.Linear(hidden, hidden), torch.nn.ReLU(),
                              torch.nn.Linear(hidden, e + 4))
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)

    def vertex_mm(pred, true):
        d = torch.einsum("ne,evc->nvc", pred - true, basis)
        return torch.sqrt((d ** 2).sum(-1) + 1e-8).mean(-1)  # [N]

    best, best_state, history = np.inf, None, []
    t0 = time.perf_counter()
    for epoch in range(epochs):
        net.train()
        order = torch.tensor(rng.permutation(len(tx)))
        for i in range(0, len(order), 128):
            idx = order[i:i + 128]
            noisy = tx[idx] + noise * torch.randn_like(tx[idx])  # MediaPipe's own jitter is larger on real footage
            out = net(noisy)
            pred = torch.sigmoid(out[:, :e] + tb[idx])
            # Gaze in units of 30 deg: 1 deg of gaze error weighs like ~0.1 mm of face.
            loss = (vertex_mm(pred, ty[idx]).mean() + l1 * (pred - ty[idx]).abs().mean() + mse * (pred - ty[idx]).square().mean()
                    + 3.0 * (out[:, e:] - tg[idx]).abs().mean())
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
        if epoch % 10 == 9 or epoch == epochs - 1:
            net.eval()
            with torch.no_grad():
                out = net(tvx)
                pv = torch.sigmoid(out[:, :e] + tvb)
                val = float(vertex_mm(pv, tvy).mean())
                mae = float((pv - tvy).abs().mean())
                active = tvy > 0.2
                mae_active = float((pv - tvy).abs()[active].mean())
                gaze_deg = float((out[:, e:] - tvg).abs().mean()) * GAZE_SCALE
            history.append({"epoch": epoch + 1, "val_vertex_mm": val, "val_mae": mae, "val_mae_active": mae_active,
                            "val_gaze_abs_deg": gaze_deg})
            score = val + 0.1 * gaze_deg
            if score < best:
                best, best_state = score, {k: v.clone() for k, v in net.state_dict().items()}
            log(f"epoch {epoch + 1}: val vertex {val:.3f} mm, MAE {mae:.4f} (active {mae_active:.3f}), gaze {gaze_deg:.2f} deg ({time.perf_counter() - t0:.0f} s)")
    net.load_state_dict(best_state)
    lin = [m for m in net if isinstance(m, torch.nn.Linear)]
    layers = [(m.weight.detach().numpy().T.copy(), m.bias.detach().numpy().copy()) for m in lin]
    meta = {"trained_on": "bench.expression_data train set (seed 1100)", "samples": int(len(x)), "held_out_samples": int(len(xv)),
            "best_val_score": best, "best": next(h for h in history if h["val_vertex_mm"] + 0.1 * h["val_gaze_abs_deg"] == best), "hidden": hidden, "epochs": epochs, "l1": l1, "seed": seed, "residual": residual,
            "weight_decay": weight_decay, "noise": noise, "dropout": dropout, "mse": mse,
            "history": history}
    return ExpressionPredictor(template, mean, std, layers, list(names), meta), meta


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.predictor_train", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path("bench/results/expressions/train"))
    parser.add_argument("--out", type=Path, default=DEFAULT_WEIGHTS)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--l1", type=float, default=0.3)
    parser.add_argument("--weight-decay", type=float, default=1e-3)
    parser.add_argument("--noise", type=float, default=0.2, help="Gaussian noise on the standardised inputs")
    parser.add_argument("--dropout", type=float, default=0.2)
    parser.add_argument("--mse", type=float, default=0.0, help="weight of a squared weight-error term (less shrinkage of sparse keys than L1)")
    parser.add_argument("--no-residual", action="store_true", help="predict weights outright, not as a correction of MediaPipe's")
    args = parser.parse_args(argv)
    from backend.headmodel.ict_source import load_ict

    asset = load_ict(progress=False)
    names = list(asset.expression_names)
    first, last = asset.parts["face"]
    basis_mm = 10.0 * asset.expression_basis[:, first:last + 1:4].astype(np.float64)
    clips = load_samples(args.data, names)
    if len(clips) <= HELD_OUT:
        print(f"error: {args.data} holds {len(clips)} clips with features; render and extract them first (see --help)", file=sys.stderr)
        return 1
    model, meta = train(clips, basis_mm, names, args.hidden, args.epochs, args.l1, residual=not args.no_residual,
                        weight_decay=args.weight_decay, noise=args.noise, dropout=args.dropout, mse=args.mse)
    digest = model.save(args.out)
    print(json.dumps({k: v for k, v in meta.items() if k != "history"}, indent=1))
    print(f"{args.out}: {args.out.stat().st_size} bytes, sha256 {digest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
