"""What a training run keeps beside the model's weights: the backbone state a streamed run carries
from one batch to the next and through its checkpoints (`carried_state`)."""
