"""Message keys: every config and metric key fedlr sends over Flower, defined once.

Kebab-case, as Flower's own ``"num-examples"`` and ``"server-round"``.
"""

# ConfigRecord keys (server -> client)
LR = "lr"
STRATEGY = "strategy"
PROXIMAL_MU = "proximal-mu"  # the key Flower's FedProx writes
SERVER_ROUND = "server-round"  # the key Flower's FedAvg writes
ESTIMATE_NOISE = "estimate-noise"

# MetricRecord keys (client -> server)
NUM_EXAMPLES = "num-examples"  # Flower's default weighting key
AGGREGATION_WEIGHT = "aggregation-weight"  # written by the server before aggregation
PARTITION_ID = "partition-id"
NOISE_ESTIMATE = "noise-estimate"
TRAIN_LOSS = "train_loss"  # the key Flower's QFedAvg reads
ACCURACY = "accuracy"
EVAL_LOSS = "eval-loss"

# node_config keys (Flower's simulation engine sets both; deployment passes --node-config)
NODE_PARTITION_ID = "partition-id"
NODE_NUM_PARTITIONS = "num-partitions"

# ArrayRecord / ConfigRecord / MetricRecord names inside a RecordDict
ARRAYS = "arrays"
CONFIG = "config"
METRICS = "metrics"
