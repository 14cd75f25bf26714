"""Message keys: every config and metric key fedlr sends over Flower, defined once.

Kebab-case, as Flower's own ``"num-examples"`` and ``"server-round"``.
"""

from fedlr.tasks import base as _task_keys

# ConfigRecord keys (server -> client)
LR = "lr"
STRATEGY = "strategy"
PROXIMAL_MU = "proximal-mu"  # the key Flower's FedProx writes
SERVER_ROUND = "server-round"  # the key Flower's FedAvg writes
ESTIMATE_NOISE = "estimate-noise"
SELECT_CLEAN = "select-clean"  # noise-response small-loss: train on the low-loss examples
DEGREE_RULE = "degree-rule"  # graph tasks: apply the degree rule (a +degree strategy)
# Per client, set by the server (not run-config keys: "batch-size" and "weight-decay" are those)
CLIENT_BATCH_SIZE = "client-batch-size"  # this round's local batch size
CLIENT_WEIGHT_DECAY = "client-weight-decay"  # weight decay at this client's rate
ADAM_BETA1 = "adam-beta1"  # Malladi et al.'s square-root rule for Adam (with +coupled)
ADAM_BETA2 = "adam-beta2"
ADAM_EPS = "adam-eps"
MEASURE_NOISE_SCALE = "measure-noise-scale"  # send the gradient at the received weights
REPLAY = "replay"  # continual: mix replay-size examples of earlier tasks into training (+replay)
SNAPSHOTS = "snapshots"  # continual evaluate: how many SNAPSHOT-i ArrayRecords to ensemble
# users' files: what every site encodes alike (classes, categories, pooled statistics; JSON),
# agreed by the server from the sites' query replies. Defined with the Task protocol.
SITE_AGREEMENT = _task_keys.SITE_AGREEMENT

# MetricRecord keys (client -> server)
NUM_EXAMPLES = "num-examples"  # Flower's default weighting key
AGGREGATION_WEIGHT = "aggregation-weight"  # written by the server before aggregation
PARTITION_ID = "partition-id"
NOISE_ESTIMATE = "noise-estimate"
TRAIN_LOSS = "train_loss"  # the key Flower's QFedAvg reads
ACCURACY = "accuracy"
EVAL_LOSS = "eval-loss"
BATCH_SIZE = "batch-size"  # query: the client's own local batch size
STEPS = "steps"  # optimizer steps taken in local training
GRADIENT_BATCH = "gradient-batch"  # examples behind the gradient in the GRADIENT record
# continual streams: the task trained on (train); accuracy and test examples per task (evaluate),
# and the same for the snapshot ensemble (an evaluate message carrying snapshots)
TASK = _task_keys.TASK
TASK_ACCURACY = _task_keys.TASK_ACCURACY  # one per task; -1 where the client holds no test example
TASK_EXAMPLES = _task_keys.TASK_EXAMPLES
ENSEMBLE_TASK_ACCURACY = _task_keys.ENSEMBLE_TASK_ACCURACY
# graph tasks: per test node (evaluate) and per node at the received weights (train)
TEST_DEGREE = _task_keys.TEST_DEGREE  # global degree of each test node
TEST_CORRECT = _task_keys.TEST_CORRECT  # 1 when that test node is classified correctly
GRAD_DEGREE = _task_keys.GRAD_DEGREE  # the degree the rule reads, per node
GRAD_NORM = _task_keys.GRAD_NORM  # norm of the loss gradient at each node's input row
GRAD_NORM_SCALED = _task_keys.GRAD_NORM_SCALED  # the same times the node's degree scale s_v
# What fedlr itself reads from an evaluate reply. Any other numeric scalar a task returns (the
# run's ``metrics``, e.g. "auroc", or a user's own, e.g. "sensitivity") is kept per client as it
# is named (fedlr.fl.client_metrics).
EVALUATE_KEYS = frozenset(
    {
        NUM_EXAMPLES,
        PARTITION_ID,
        AGGREGATION_WEIGHT,
        ACCURACY,
        EVAL_LOSS,
        TASK_ACCURACY,
        TASK_EXAMPLES,
        ENSEMBLE_TASK_ACCURACY,
        TEST_DEGREE,
        TEST_CORRECT,
    }
)

# What fedlr itself reads from a train reply; any other numeric scalar (a user's own train
# metric) is kept per client as it is named, like an evaluate reply's extras.
TRAIN_KEYS = frozenset(
    {
        NUM_EXAMPLES,
        PARTITION_ID,
        AGGREGATION_WEIGHT,
        NOISE_ESTIMATE,
        TRAIN_LOSS,
        STEPS,
        TASK,
        GRADIENT_BATCH,
        GRAD_DEGREE,
        GRAD_NORM,
        GRAD_NORM_SCALED,
    }
)

# node_config keys (Flower's simulation engine sets both; deployment passes --node-config)
NODE_PARTITION_ID = "partition-id"
NODE_NUM_PARTITIONS = "num-partitions"
DATA_PATH = _task_keys.DATA_PATH  # deployment: this SuperNode's own file (users' files)

# ArrayRecord / ConfigRecord / MetricRecord names inside a RecordDict
ARRAYS = "arrays"
CONFIG = "config"
METRICS = "metrics"
GRADIENT = "gradient"  # ArrayRecord: the mean gradient at the received weights (noise scale)
SNAPSHOT = "snapshot-{}"  # ArrayRecord: the global model kept at the end of task i
SITE = "site"  # ConfigRecord of a query reply (users' files): the site's shared statistics
SITE_STATISTICS = "statistics"  # its JSON
