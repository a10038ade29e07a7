using static TorchSharp.torch;

namespace Retrieval.Trainer.Training;

/// <summary>
/// <c>tf.keras.optimizers.Adagrad</c>: the accumulator starts at 0.1, acc += g², var -= lr·g / (√acc + ε), ε = 1e-7.
/// Rows of an embedding table that a batch does not touch get a zero gradient and stay unchanged, exactly as
/// with Keras's sparse updates.
/// </summary>
public sealed class KerasAdagrad : IDisposable
{
    private readonly Tensor[] _parameters;
    private readonly Tensor[] _accumulators;
    private readonly double _learningRate;
    private readonly double _epsilon;

    public KerasAdagrad(IEnumerable<Tensor> parameters, double learningRate, double initialAccumulator = 0.1, double epsilon = 1e-7)
    {
        _parameters = [.. parameters];
        _accumulators = [.. _parameters.Select(p => full_like(p, initialAccumulator))];
        _learningRate = learningRate;
        _epsilon = epsilon;
    }

    public void ZeroGrad()
    {
        foreach (var p in _parameters)
        {
            p.grad?.zero_();
        }
    }

    public void Step()
    {
        using var _ = no_grad();
        for (int i = 0; i < _parameters.Length; i++)
        {
            var g = _parameters[i].grad;
            if (g is null)
            {
                continue;
            }
            _accumulators[i].addcmul_(g, g, 1);
            using var denominator = _accumulators[i].sqrt().add_(_epsilon);
            _parameters[i].addcdiv_(g, denominator, -_learningRate);
        }
    }

    public void Dispose()
    {
        foreach (var a in _accumulators)
        {
            a.Dispose();
        }
    }
}
