"""Training: the epoch plan, the train state and step, the loop with preemption, the LR finder."""
