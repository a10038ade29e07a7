using TorchSharp;

namespace Retrieval.Trainer.Training;

/// <summary>Picks the TorchSharp device at run time: auto = CUDA when this build and machine have it, else CPU.</summary>
public static class DeviceSelector
{
    public static torch.Device Select(string requested, int threads, Action<string>? log = null)
    {
        if (threads > 0)
        {
            torch.set_num_threads(threads);
        }
        bool cuda = torch.cuda.is_available();
        var device = requested switch
        {
            "cpu" => torch.CPU,
            "cuda" when cuda => torch.CUDA,
            "cuda" => throw new InvalidOperationException(
                "--device cuda was asked for, but CUDA is not available: build with -p:TorchBackend=cuda-linux (or cuda-windows) on a machine with an NVIDIA GPU, or use --device cpu"),
            _ => cuda ? torch.CUDA : torch.CPU,
        };
        log?.Invoke($"Device: {device.type} ({torch.get_num_threads()} CPU threads)");
        return device;
    }
}
