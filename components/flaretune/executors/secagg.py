"""The executor of the secure-aggregation protocol tasks: an empty answer for the site's filter to fill.

A site's secrets belong to :class:`flaretune.filters.secagg.SecureAggregationFilter`, which a site may
enforce from its ``privacy.json`` whatever the job configures; this executor only lets FLARE route the
tasks ``secagg_advertise``, ``secagg_share`` and ``secagg_unmask`` to the site. If no filter answers, the
server sees the empty answer and stops the round with a message naming the missing filter.
"""

from nvflare.apis.dxo import DXO, DataKind
from nvflare.apis.executor import Executor
from nvflare.apis.fl_constant import ReturnCode
from nvflare.apis.fl_context import FLContext
from nvflare.apis.shareable import Shareable, make_reply
from nvflare.apis.signal import Signal

from flaretune import keys

PROTOCOL_TASKS = (keys.SECAGG_ADVERTISE_TASK, keys.SECAGG_SHARE_TASK, keys.SECAGG_UNMASK_TASK)


class SecAggProtocolExecutor(Executor):
    def execute(self, task_name: str, shareable: Shareable, fl_ctx: FLContext, abort_signal: Signal) -> Shareable:
        if task_name not in PROTOCOL_TASKS:
            self.log_error(fl_ctx, f"unknown task {task_name!r}; this executor runs {', '.join(PROTOCOL_TASKS)}")
            return make_reply(ReturnCode.TASK_UNKNOWN)
        return DXO(DataKind.METRICS, data={}, meta={keys.SECAGG: {"pending": task_name}}).to_shareable()
