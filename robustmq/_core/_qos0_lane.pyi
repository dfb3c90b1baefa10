# The compiled twin has exactly the API of the pure-Python reference.
from robustmq._core.qos0_lane import FAIR_READ as FAIR_READ
from robustmq._core.qos0_lane import ConnectionCore as ConnectionCore
from robustmq._core.qos0_lane import KeepAliveWheel as KeepAliveWheel
from robustmq._core.qos0_lane import LaneContext as LaneContext
from robustmq._core.qos0_lane import Plan as Plan
from robustmq._core.qos0_lane import PlanCache as PlanCache
from robustmq._core.qos0_lane import SessionCore as SessionCore
from robustmq._core.qos0_lane import connect as connect
from robustmq._core.qos0_lane import forward as forward
from robustmq._core.qos0_lane import plain_connect as plain_connect
from robustmq._core.qos0_lane import scan as scan
