// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

/// @title A hostile account for the market's withdraw path (test only).
/// @notice Acts on the market through `exec` (register, unstake, postJob, cancel…) so it
/// can be credited like any provider or client, then withdraws. When the market pays it,
/// `receive` misbehaves according to `mode`.
contract ReentrantReceiver {
    /// @notice Accept the payment quietly.
    uint8 public constant ACCEPT = 0;
    /// @notice Re-enter `withdraw` and let its failure bubble up (the payment fails).
    uint8 public constant REENTER = 1;
    /// @notice Re-enter `withdraw`, swallow its failure and keep the payment.
    uint8 public constant REENTER_AND_SWALLOW = 2;
    /// @notice Refuse every payment.
    uint8 public constant REFUSE = 3;

    address public immutable market;
    uint8 public mode;
    /// @notice Re-entry attempts made from `receive`.
    uint256 public reentries;
    /// @notice Revert data of the last swallowed re-entry.
    bytes public lastError;
    /// @notice Ether received so far.
    uint256 public received;

    error ReceiverRefused();

    constructor(address market_) {
        market = market_;
    }

    function setMode(uint8 mode_) external {
        mode = mode_;
    }

    /// @notice Call the market with `data` (and the ether sent), bubbling its revert.
    function exec(bytes calldata data) external payable returns (bytes memory result) {
        bool ok;
        (ok, result) = market.call{value: msg.value}(data);
        if (!ok) {
            assembly {
                revert(add(result, 32), mload(result))
            }
        }
    }

    receive() external payable {
        received += msg.value;
        if (mode == REFUSE) revert ReceiverRefused();
        if (mode == REENTER) {
            reentries += 1;
            (bool ok, bytes memory err) = market.call(abi.encodeWithSignature("withdraw()"));
            if (!ok) {
                assembly {
                    revert(add(err, 32), mload(err))
                }
            }
        } else if (mode == REENTER_AND_SWALLOW) {
            reentries += 1;
            (bool ok, bytes memory err) = market.call(abi.encodeWithSignature("withdraw()"));
            if (!ok) lastError = err;
        }
    }
}
