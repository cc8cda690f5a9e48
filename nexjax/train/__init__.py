"""Training: a run in its workdir (the same run or refused, its pretrained body, its layout and
lock), the job (devices, model, data, pretrained weights), the epoch plan, the optimizer, the
train state and step, the loop with checkpoints and preemption, the TTA scores and threshold."""
