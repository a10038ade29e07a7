using Retrieval.Core.Data;

namespace Retrieval.Trainer.Tests;

/// <summary>Generated MovieLens-format data shared by the tests of a class (never real MovieLens).</summary>
public sealed class SampleData : IDisposable
{
    public SampleData()
    {
        Directory = Path.Combine(Path.GetTempPath(), "retrieval-trainer-tests-" + Guid.NewGuid().ToString("N")[..12]);
        SampleGenerator.Write(Path.Combine(Directory, "data"), new SampleOptions(Users: 300, Movies: 400, Ratings: 20_000, Seed: 1));
        Dataset = MovieLensLoader.Load(DataDirectory);
    }

    public string Directory { get; }
    public string DataDirectory => Path.Combine(Directory, "data");
    public MovieLensDataset Dataset { get; }

    public string NewFolder(string name) => Path.Combine(Directory, name + "-" + Guid.NewGuid().ToString("N")[..6]);

    public void Dispose()
    {
        try
        {
            System.IO.Directory.Delete(Directory, recursive: true);
        }
        catch (IOException)
        {
        }
    }
}
