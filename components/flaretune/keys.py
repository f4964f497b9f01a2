"""Every key that travels between sites and the server, in one module both sides import.

A site module must never import a server module to learn a key string (nor the other way round); both
import it from here. The values are wire format: changing one breaks every running job and every
checkpoint written before, so they stay exactly as they were when each was introduced.
"""

# ---- task and result meta of the training workflows (FLModel.meta) ----
NUM_EXAMPLES = "num_examples"  # result: the site's training example count, the aggregation weight
FEDPROX_MU = "fedprox_mu"  # task: weight of FedProx's proximal term on the site (0: plain local training)
MODEL_SPEC = "flaretune_spec"  # task and persisted model: the PeftSpec as a dict
ROUND = "flaretune_round"  # persisted model: the round that produced it
FINAL = "flaretune_final"  # persisted model: True for the model of the last round
UPLOAD_BYTES = "upload_param_bytes"  # result: bytes of the tensors the site sent

# ---- model streaming (ObjectStreamer): channel, topics and task ----
# KEY_*, KIND_*, STATUS_* keep the names they have in flaretune.streaming.protocol.
STREAM_CHANNEL = "flaretune.streaming"
STREAM_TOPIC = "model_push"
STREAM_TASK_NAME = "model_push"
STREAM_UPDATE_TOPIC = "model_update"  # a site streams its trained model folder back on this topic

STREAM_PREFIX = "flaretune.stream."
# stream context (sent once, with the first message)
KEY_PUSH_ID = STREAM_PREFIX + "push_id"
KEY_MANIFEST = STREAM_PREFIX + "manifest"
# chunk messages
KEY_KIND = STREAM_PREFIX + "kind"  # "chunk" | "done"
KEY_FILE = STREAM_PREFIX + "file"
KEY_INDEX = STREAM_PREFIX + "index"
KEY_OFFSET = STREAM_PREFIX + "offset"
KEY_LENGTH = STREAM_PREFIX + "length"
KEY_CHUNK_SHA = STREAM_PREFIX + "chunk_sha256"
KEY_FILE_SIZE = STREAM_PREFIX + "file_size"
KEY_FILE_SHA = STREAM_PREFIX + "file_sha256"
KEY_SLICE_OFFSET = STREAM_PREFIX + "slice_offset"  # file offset of this message's data
KEY_LAST = STREAM_PREFIX + "last"  # this message ends its chunk: the reply is the chunk's verdict
KEY_DATA = STREAM_PREFIX + "data"
# replies and task results
KEY_STATUS = STREAM_PREFIX + "status"
KEY_REASON = STREAM_PREFIX + "reason"
KEY_PUBLISHED = STREAM_PREFIX + "published"
KEY_NEED = STREAM_PREFIX + "need"
KEY_DEST = STREAM_PREFIX + "dest"
KEY_RESULT = STREAM_PREFIX + "result"  # set in the receiver's stream context when the stream ends
# full-model updates
KEY_MODEL_NAME = STREAM_PREFIX + "model_name"  # train task: the pushed model folder to start from
KEY_ROUND = STREAM_PREFIX + "round"
KEY_UPDATE = STREAM_PREFIX + "update"  # train result: {"model_name", "file_sha256", "total_bytes"}
KEY_METRICS = STREAM_PREFIX + "metrics"
# a streamed update's example count is the same key as every other result's
KEY_NUM_EXAMPLES = NUM_EXAMPLES

# values of KEY_KIND and KEY_STATUS
KIND_CHUNK = "chunk"
KIND_DONE = "done"
STATUS_OK = "ok"
STATUS_NACK = "nack"  # the chunk was refused: send it again
STATUS_FAIL = "fail"  # give up
STATUS_LOST = "lost"  # no reply came (connection dropped, receiver busy): resent after a growing pause

# sticky FLContext property set on a site once a push was received: the folder the model now lives in
PUSHED_MODEL_DIR = "flaretune_pushed_model_dir"

# non-sticky FLContext property of one task on a site: the global model (name -> float64 array) the task
# data carried, recorded by GaussianPrivacyFilter's task-data half so its result half can measure the update
DP_RECEIVED_MODEL = "flaretune_dp_received_model"

# ---- secure aggregation (flaretune.aggregation.secagg, flaretune.filters.secagg) ----
SECAGG = "flaretune_secagg"  # task meta: the protocol step's request; result meta: the site's answer
SECAGG_ADVERTISE_TASK = "secagg_advertise"  # the extra tasks of a secure-aggregation round
SECAGG_SHARE_TASK = "secagg_share"
SECAGG_UNMASK_TASK = "secagg_unmask"
SECAGG_WEIGHT = "flaretune_secagg.weight"  # masked result: the site's example count, masked with its update
# non-sticky FLContext property of one task on a site: the request its task data carried (data half -> result half)
SECAGG_REQUEST = "flaretune_secagg_request"
