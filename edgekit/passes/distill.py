"""distill: train the current (pruned or smaller) model to match a teacher's outputs (knowledge distillation).

Under `torchrun --nproc-per-node N` the N processes train together (DistributedDataParallel; gloo, NCCL on CUDA):
every batch is the one a lone process takes with the same seed, cut into N contiguous shares, and each share's loss
is weighted by its size, so the gradients are the lone process's (batch norm statistics cover the whole batch too)."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from edgekit.data import Dataset, load_data
from edgekit.distributed import local_rank, process_group, rank, sum_across, world_size
from edgekit.errors import UserError
from edgekit.metrics import sample_score
from edgekit.model import Format, Model
from edgekit.passes.base import Context, Pass
from edgekit.training import Checkpoint, batch_count, batches, first_output, part_bounds


@dataclass(frozen=True, slots=True)
class TrainingConfig:
    """What the training loop reads: distill's fields (and qat's, which changes some defaults)."""

    teacher: str = ""  # file.py:factory; empty: the model as ingested, before the compression steps
    data: str = ""  # training data (.npz or .npy folder); empty: the calibration data (--calib)
    temperature: float = field(default=4.0, metadata={"range": (0.05, 100.0)})
    kl_weight: float = field(default=1.0, metadata={"range": (0.0, 1e4)})  # KL on temperature-softened logits
    mse_weight: float = field(default=0.0, metadata={"range": (0.0, 1e4)})  # MSE between outputs (embeddings)
    ce_weight: float = field(default=0.0, metadata={"range": (0.0, 1e4)})  # cross-entropy on labels, when the data has them
    optimizer: Literal["adamw", "sgd"] = "adamw"
    lr: float = field(default=1e-3, metadata={"range": (1e-9, 10.0)})
    weight_decay: float = field(default=0.0, metadata={"range": (0.0, 1.0)})
    schedule: Literal["cosine", "constant"] = "cosine"
    epochs: int = field(default=10, metadata={"range": (1, 100_000)})
    steps: int = field(default=0, metadata={"range": (0, 10_000_000)})  # optimizer steps; 0: epochs × batches
    batch_size: int = field(default=32, metadata={"range": (1, 65_536)})
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto: CUDA when present
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"  # auto: bf16/fp16 autocast on CUDA, fp32 on CPU
    eval_every: int = field(default=0, metadata={"range": (0, 10_000_000)})  # steps; 0: once per epoch
    eval_samples: int = field(default=512, metadata={"range": (1, 10_000_000)})
    patience: int = field(default=0, metadata={"range": (0, 10_000)})  # evaluations without gain before stopping; 0: off
    restore_best: bool = False  # end with the weights of the best evaluation
    checkpoint_every: int = field(default=0, metadata={"range": (0, 10_000_000)})  # steps; 0: once per epoch


@dataclass(frozen=True, slots=True)
class DistillConfig(TrainingConfig):
    student: str = ""  # file.py:factory of a smaller architecture; empty: the current model


class Distill(Pass):
    name = "distill"
    accepts = frozenset({Format.TORCH})
    produces = Format.TORCH
    Config = DistillConfig
    uses_calibration = True
    uses_evaluation = True
    trains_across_processes = True  # under torchrun every process runs it (and the steps before it) together

    def run(self, model: Model, config: DistillConfig, ctx: Context) -> Model:
        teacher, data, device = training_setup(self.name, model, config, ctx)
        student = _factory_module(self.name, config.student, model) if config.student else copy.deepcopy(model.module)
        trained, report = train_student(self.name, teacher, student, data, model, config, ctx, device)
        return model.derive(module=trained.to("cpu").eval(),
                            meta={"reports": [*model.meta.get("reports", []), report]})


def training_setup(name: str, model: Model, config: TrainingConfig, ctx: Context) -> tuple[Any, Dataset, Any]:
    """(teacher module, training data, device) of pass `name`'s run, checked: one UserError line for what is missing."""
    if config.kl_weight + config.mse_weight + config.ce_weight == 0:
        raise UserError(f"{name}: kl_weight, mse_weight and ce_weight are all 0: set at least one")
    teacher = (_factory_module(name, config.teacher, model) if config.teacher
               else ctx.source.module if ctx.source else None)
    if teacher is None:
        raise UserError(f"{name}: no teacher: run it inside compile (the source model teaches) or set teacher: file.py:factory")
    data = load_data(config.data, model.inputs, model.meta.get("tokenizer")) if config.data else ctx.calibration
    if data is None or data.synthetic:
        raise UserError(f"{name} needs real training data: give --calib DATA or set data: path.npz")
    if config.ce_weight and data.labels is None:
        if config.kl_weight + config.mse_weight == 0:
            raise UserError(f"{name}: only ce_weight is set but {data.origin} has no labels; set kl_weight or mse_weight")
        ctx.logger.info("%s: %s has no labels: training on the teacher's outputs alone", name, data.origin)
    size = min(config.batch_size, len(data))
    if size < world_size():
        raise UserError(f"{name}: {world_size()} processes share each batch, but a batch holds {size} samples: "
                        f"set batch_size to at least {world_size()}")
    return teacher, data, _device(name, config.device)


def train_student(name: str, teacher: Any, student: Any, data: Dataset, model: Model, config: TrainingConfig,
                  ctx: Context, device: Any, label: str = "distilling", score_first: bool = False) -> tuple[Any, dict]:
    """`student` trained toward `teacher` (across the torchrun processes when there are several) and the run's report;
    `score_first`: the report's `initial` holds the evaluation metric before the first step."""
    with process_group(device) as backend:
        trained, summary = _train(teacher, student, data, ctx.evaluation, model, config, ctx, device, name, label,
                                  score_first)
    return trained, {"pass": name, "device": str(device), "world_size": world_size(), "backend": backend, **summary}


def _factory_module(name: str, source: str, model: Model) -> Any:
    from edgekit.ingest.torch import read_factory

    path, _, factory = source.rpartition(":")
    if not path or not factory:
        raise UserError(f"{name}: '{source}' is not file.py:factory")
    return read_factory(Path(path), factory, model.inputs).module


def _device(name: str, choice: str) -> Any:
    import torch

    if choice == "cuda" and not torch.cuda.is_available():
        raise UserError(f"{name}: device 'cuda' asked, but PyTorch sees no CUDA device; use device: auto")
    if choice == "cuda" or (choice == "auto" and torch.cuda.is_available()):
        return torch.device("cuda", local_rank()) if world_size() > 1 else torch.device("cuda")
    return torch.device("cpu")


def _autocast_dtype(precision: str, device: Any) -> Any:
    """The autocast dtype, or None for fp32. CPU autocast only when asked: it rarely helps there."""
    import torch

    if precision == "fp32" or (precision == "auto" and device.type == "cpu"):
        return None
    if precision == "fp16":
        return torch.float16
    if precision == "bf16" or (device.type == "cuda" and torch.cuda.is_bf16_supported()):
        return torch.bfloat16
    return torch.float16


def _loss(student_out: Any, teacher_out: Any, labels: Any, config: TrainingConfig) -> Any:
    import torch.nn.functional as F

    s, t = student_out.float(), teacher_out.float()
    loss = s.new_zeros(())
    if config.kl_weight:
        temp = config.temperature
        flat_s, flat_t = s.reshape(-1, s.shape[-1]), t.reshape(-1, t.shape[-1])
        kl = F.kl_div(F.log_softmax(flat_s / temp, dim=-1), F.log_softmax(flat_t / temp, dim=-1),
                      reduction="batchmean", log_target=True)
        loss = loss + config.kl_weight * kl * temp * temp
    if config.mse_weight:
        loss = loss + config.mse_weight * F.mse_loss(s, t)
    if config.ce_weight and labels is not None:
        loss = loss + config.ce_weight * F.cross_entropy(s.reshape(len(labels), -1), labels)
    return loss


def _train(teacher: Any, student: Any, data: Dataset, evaluation: Dataset | None, model: Model,
           config: TrainingConfig, ctx: Context, device: Any, name: str, label: str,
           score_first: bool) -> tuple[Any, dict[str, Any]]:
    import torch

    from edgekit.passes.distill_parallel import data_parallel

    torch.manual_seed(config.seed + rank())  # each process its own dropout masks; rank 0 as a lone process
    teacher = copy.deepcopy(teacher).to(device).eval()
    for parameter in teacher.parameters():
        parameter.requires_grad_(False)
    student = student.to(device).train()
    for parameter in student.parameters():
        parameter.requires_grad_(True)
    per_epoch = batch_count(data, config.batch_size)
    size = min(config.batch_size, len(data))
    shares = [stop - start for start, stop in (part_bounds(size, (index, world_size())) for index in range(world_size()))]
    share = world_size() * shares[rank()] / size  # DDP averages the processes' gradients: their mean is the batch's
    total = config.steps or config.epochs * per_epoch
    optimizer = (torch.optim.AdamW(student.parameters(), lr=config.lr, weight_decay=config.weight_decay)
                 if config.optimizer == "adamw" else
                 torch.optim.SGD(student.parameters(), lr=config.lr, momentum=0.9, weight_decay=config.weight_decay))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, (lambda step: 0.5 * (1 + math.cos(math.pi * min(step, total) / total))) if config.schedule == "cosine"
        else (lambda step: 1.0))
    dtype = _autocast_dtype(config.precision, device)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype is torch.float16)
    scorer = _Scorer(evaluation, teacher, model, config, device) if evaluation is not None else None
    state = Checkpoint(ctx.checkpoints, device)
    progress = state.resume(student, optimizer, schedule, scaler)  # by every process; DDP starts from rank 0's weights
    if scorer and score_first and progress["step"] == 0:
        metric, value = scorer.score(student)
        progress["initial"] = {"step": 0, "name": metric, "value": round(value, 6)}
    ctx.progress.start(label, total)
    ctx.progress.advance(progress["step"])
    every_eval = config.eval_every or per_epoch
    every_save = config.checkpoint_every or per_epoch
    loss_value = float("nan")
    with data_parallel(student, device) as trainer:
        while progress["step"] < total and not progress["stopped"]:
            epoch, skip = divmod(progress["step"], per_epoch)
            for index, (inputs, labels) in enumerate(batches(data, model.inputs, config.batch_size, config.seed, epoch,
                                                             part=(rank(), world_size()))):
                if index < skip:
                    continue
                inputs = [tensor.to(device) for tensor in inputs]
                labels = None if labels is None else labels.to(device)
                with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                    with torch.no_grad():
                        target = first_output(teacher(*inputs))
                    loss = share * _loss(first_output(trainer(*inputs)), target, labels, config)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                schedule.step()
                loss_value = float(sum_across(loss.detach())) / world_size()  # the whole batch's loss
                progress["step"] += 1
                progress["losses"].append(float(f"{loss_value:.6g}"))  # 6 digits: qat's losses are ~1e-6
                ctx.progress.advance()
                done = progress["step"] >= total
                if scorer and (progress["step"] % every_eval == 0 or done):
                    _evaluate(scorer, student, progress, config, ctx, loss_value, name)
                if done or progress["stopped"] or progress["step"] % every_save == 0:
                    state.save(student, optimizer, schedule, scaler, progress)
                if done or progress["stopped"]:
                    break
    if config.restore_best and progress.get("best_state") is not None:
        student.load_state_dict(progress["best_state"])
    state.save(student, optimizer, schedule, scaler, progress)
    metric = progress.get("metrics", [])
    ctx.progress.finish(f"loss {loss_value:.4f}" + (f", {metric[-1]['name']} {metric[-1]['value']:.4f}" if metric else ""))
    summary = {"batch_shares": shares, "steps": progress["step"], "planned_steps": total, "stopped_early": progress["stopped"],
               "final_loss": progress["losses"][-1] if progress["losses"] else None,
               "first_loss": progress["losses"][0] if progress["losses"] else None,
               "evaluations": metric, "best": progress.get("best"), "resumed_from": progress.get("resumed_from", 0),
               **({"initial": progress.get("initial")} if score_first else {})}
    return student, summary


def _evaluate(scorer: _Scorer, student: Any, progress: dict, config: TrainingConfig, ctx: Context, loss: float,
              pass_name: str) -> None:
    """Score the student, keep the best, count evaluations without gain for early stopping."""
    metric, value = scorer.score(student)
    progress.setdefault("metrics", []).append({"step": progress["step"], "name": metric, "value": round(value, 6)})
    ctx.logger.info("%s: step %d loss %.4f %s %.4f", pass_name, progress["step"], loss, metric, value)
    if progress.get("best") is None or value > progress["best"]:
        progress["best"], progress["bad"] = value, 0
        if config.restore_best:
            progress["best_state"] = {k: v.detach().cpu().clone() for k, v in student.state_dict().items()}
    else:
        progress["bad"] = progress.get("bad", 0) + 1
        if config.patience and progress["bad"] >= config.patience:
            ctx.logger.info("%s: no gain in %d evaluations: stopping at step %d", pass_name, config.patience,
                            progress["step"])
            progress["stopped"] = True


class _Scorer:
    """The evaluation metric, higher is better: top-1 accuracy with labels, else cosine to the teacher."""

    def __init__(self, evaluation: Dataset, teacher: Any, model: Model, config: TrainingConfig, device: Any) -> None:
        import torch

        subset = evaluation.head(config.eval_samples)
        self.device = device
        self.inputs = [([t.to(device) for t in inputs], labels) for inputs, labels in  # this process's share
                       batches(subset, model.inputs, config.batch_size, seed=None, drop_last=False,
                               part=(rank(), world_size()))]
        with torch.no_grad():
            self.targets = [first_output(teacher(*inputs)).float() for inputs, _ in self.inputs]
        self.labelled = subset.labels is not None

    def score(self, student: Any) -> tuple[str, float]:
        """Top-1 accuracy on the labels where there are labels, else cosine to the teacher (metrics.sample_score),
        averaged over the evaluation samples (every process scores its share; all get the same mean)."""
        import torch

        metric = "top1" if self.labelled else "cosine"
        student.eval()
        total = weight = 0.0
        with torch.no_grad():
            for (inputs, labels), target in zip(self.inputs, self.targets):
                out = first_output(student(*inputs)).float().cpu().numpy()
                wanted = target.cpu().numpy()
                total += sample_score(metric, wanted, out, None if labels is None else labels.numpy()) * len(out)
                weight += len(out)
        student.train()
        total, weight = sum_across(torch.tensor([total, weight], dtype=torch.float64, device=self.device)).tolist()
        return ("accuracy" if self.labelled else "cosine"), total / weight
