"""Wire keys of the model stream. Every chunk message says what it is, so a receiver can check it on its own.

A chunk message carries: file name, chunk index, offset, length, chunk sha256, file size, file sha256, and
one slice of the chunk's data (its file offset, and whether it is the chunk's last slice).
A reply carries a status: ``ok``, ``nack`` (the chunk was refused: send it again) or ``fail`` (give up);
the sender records a missing reply as ``lost`` (send it again after a pause).
"""

CHANNEL = "flaretune.streaming"
TOPIC = "model_push"
TASK_NAME = "model_push"

PREFIX = "flaretune.stream."
# stream context (sent once, with the first message)
KEY_PUSH_ID = PREFIX + "push_id"
KEY_MANIFEST = PREFIX + "manifest"
# chunk messages
KEY_KIND = PREFIX + "kind"  # "chunk" | "done"
KEY_FILE = PREFIX + "file"
KEY_INDEX = PREFIX + "index"
KEY_OFFSET = PREFIX + "offset"
KEY_LENGTH = PREFIX + "length"
KEY_CHUNK_SHA = PREFIX + "chunk_sha256"
KEY_FILE_SIZE = PREFIX + "file_size"
KEY_FILE_SHA = PREFIX + "file_sha256"
KEY_SLICE_OFFSET = PREFIX + "slice_offset"  # file offset of this message's data (a chunk may take several)
KEY_LAST = PREFIX + "last"  # this message ends its chunk: the reply is the chunk's verdict
KEY_DATA = PREFIX + "data"
# replies and task results
KEY_STATUS = PREFIX + "status"
KEY_REASON = PREFIX + "reason"
KEY_PUBLISHED = PREFIX + "published"
KEY_NEED = PREFIX + "need"
KEY_DEST = PREFIX + "dest"
KEY_RESULT = PREFIX + "result"  # set in the receiver's stream context when the stream ends

KIND_CHUNK = "chunk"
KIND_DONE = "done"
STATUS_OK = "ok"
STATUS_NACK = "nack"
STATUS_FAIL = "fail"
STATUS_LOST = "lost"  # no reply came (connection dropped, receiver busy): resent after a growing pause

# sticky FLContext property set on a site once a push was received: the folder the model now lives in
PUSHED_MODEL_DIR = "flaretune_pushed_model_dir"

# full-model updates: a site streams its trained model folder back to the server on this topic
UPDATE_TOPIC = "model_update"
KEY_MODEL_NAME = PREFIX + "model_name"  # train task: the pushed model folder to start from
KEY_ROUND = PREFIX + "round"
KEY_UPDATE = PREFIX + "update"  # train result: {"model_name", "file_sha256", "total_bytes"} of the streamed update
KEY_NUM_EXAMPLES = "num_examples"
KEY_METRICS = PREFIX + "metrics"
