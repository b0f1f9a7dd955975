"""Small real Gymnasium envs for the gym-world tests, registered under test/*: each remembers every action
it was stepped with, and shows it in its RGB observation (pixel value = action + 1)."""

import gymnasium
import numpy as np
from gymnasium import spaces

# ale-py's full Atari action set, in its order (`full_action_space=True`).
ATARI_MEANINGS = (
    "NOOP", "FIRE", "UP", "RIGHT", "LEFT", "DOWN", "UPRIGHT", "UPLEFT", "DOWNRIGHT", "DOWNLEFT",
    "UPFIRE", "RIGHTFIRE", "LEFTFIRE", "DOWNFIRE", "UPRIGHTFIRE", "UPLEFTFIRE", "DOWNRIGHTFIRE",
    "DOWNLEFTFIRE",
)  # fmt: skip
ACTIONS_ID = "test/Actions-v0"  # Discrete(18) with Atari's meanings, RGB observations
BUTTONS_ID = "test/Buttons-v0"  # MultiBinary(3), rendered frames
EPISODE = 5  # steps until an episode of either env terminates


class ActionsEnv(gymnasium.Env):
    """Discrete(len(meanings)) named by `meanings`; the observation is a 12x10 RGB frame of value
    action + 1 (0 after a reset); episodes terminate after `EPISODE` steps."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 30}

    def __init__(self, render_mode=None, meanings=ATARI_MEANINGS) -> None:
        self.meanings = tuple(meanings)
        self.action_space = spaces.Discrete(len(self.meanings))
        self.observation_space = spaces.Box(0, 255, (12, 10, 3), np.uint8)
        self.render_mode = render_mode
        self.received: list[int] = []
        self.resets = 0
        self._t = 0

    def get_action_meanings(self) -> list[str]:
        return list(self.meanings)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.resets += 1
        self._t = 0
        return np.zeros((12, 10, 3), np.uint8), {}

    def step(self, action):
        self.received.append(int(action))
        self._t += 1
        obs = np.full((12, 10, 3), int(action) + 1, np.uint8)
        return obs, 1.0, self._t >= EPISODE, False, {}

    def render(self):
        return None  # never called: the observation is the frame


class ButtonsEnv(gymnasium.Env):
    """MultiBinary(3); a 6x6 render whose pixels are the held buttons x 80, channel by channel."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 30}

    def __init__(self, render_mode=None) -> None:
        self.action_space = spaces.MultiBinary(3)
        self.observation_space = spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.render_mode = render_mode
        self.received: list[np.ndarray] = []
        self._last = np.zeros(3, np.int8)
        self._t = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self._t, self._last = 0, np.zeros(3, np.int8)
        return np.zeros(2, np.float32), {}

    def step(self, action):
        self._last = np.asarray(action, np.int8).copy()
        self.received.append(self._last)
        self._t += 1
        return np.zeros(2, np.float32), 0.0, self._t >= EPISODE, False, {}

    def render(self):
        return np.broadcast_to(self._last.astype(np.uint8) * 80, (6, 6, 3)).copy()


def register() -> None:
    for env_id, cls in ((ACTIONS_ID, ActionsEnv), (BUTTONS_ID, ButtonsEnv)):
        if env_id not in gymnasium.registry:
            gymnasium.register(id=env_id, entry_point=cls)


register()
