"""Real local HTTP servers standing in for model providers, with faults on demand."""

from tests.fakes.open_inference_server import FakeOpenInferenceServer, OpenInferenceFault
from tests.fakes.openai_server import FakeOpenAIServer, OpenAIFault
from tests.fakes.threaded_server import FaultSwitch, RecordedRequest, ThreadedAiohttpServer

__all__ = [
    "FakeOpenAIServer",
    "FakeOpenInferenceServer",
    "FaultSwitch",
    "OpenAIFault",
    "OpenInferenceFault",
    "RecordedRequest",
    "ThreadedAiohttpServer",
]
