using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.Json.Serialization;

namespace Retrieval.Core.Artifact;

/// <summary>
/// manifest.json, the contract between trainer and services: what the model is, how its features were
/// fitted, how it was trained and how well it did, and the SHA-256 of every other file in the version folder.
/// </summary>
public sealed class ModelManifest
{
    public const int CurrentFormatVersion = 1;
    public const string FileName = "manifest.json";

    public static readonly JsonSerializerOptions Json = new(JsonSerializerDefaults.Web)
    {
        WriteIndented = true,
        DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
        NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals,
    };

    public int FormatVersion { get; set; } = CurrentFormatVersion;
    public string ModelVersion { get; set; } = "";
    public DateTimeOffset CreatedUtc { get; set; }
    public DatasetInfo Dataset { get; set; } = new();
    public TowerSpec QueryTower { get; set; } = new();
    public TowerSpec CandidateTower { get; set; } = new();

    /// <summary>Dimension of both towers' outputs (the embedding space searched).</summary>
    public int OutputDim { get; set; }

    /// <summary>Number of catalogue rows in the candidate embeddings.</summary>
    public int Candidates { get; set; }

    /// <summary>The options the model was trained with, as the trainer records them.</summary>
    public JsonObject Training { get; set; } = [];

    /// <summary>FactorizedTopK accuracy per part ("train", "test") and cut-off ("top1" … "top100").</summary>
    public Dictionary<string, Dictionary<string, double>> Metrics { get; set; } = [];

    /// <summary>Movie ids by training count, most popular first: the fallback list when search is unavailable.</summary>
    public int[] PopularMovieIds { get; set; } = [];

    /// <summary>Training counts of <see cref="PopularMovieIds"/>, in the same order.</summary>
    public int[] PopularMovieCounts { get; set; } = [];

    /// <summary>Every other file of the version folder, by relative path, with its SHA-256 and size.</summary>
    public SortedDictionary<string, FileEntry> Files { get; set; } = new(StringComparer.Ordinal);

    public void Write(string path) => File.WriteAllText(path, JsonSerializer.Serialize(this, Json));

    public static ModelManifest Read(string path)
    {
        try
        {
            return JsonSerializer.Deserialize<ModelManifest>(File.ReadAllText(path), Json)
                ?? throw new InvalidDataException($"{path}: empty manifest");
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"{path}: not a valid manifest ({e.Message})", e);
        }
    }
}

public sealed class DatasetInfo
{
    public string Name { get; set; } = "";
    public string Format { get; set; } = "";
    public string Fingerprint { get; set; } = "";
    public int Ratings { get; set; }
    public int TrainingRatings { get; set; }
    public int Users { get; set; }
    public int Movies { get; set; }
}

public sealed class TowerSpec
{
    /// <summary>Weights file (safetensors) of the tower.</summary>
    public string WeightsFile { get; set; } = "";

    /// <summary>Each feature's fitted state, in the tower's input order.</summary>
    public List<JsonObject> Features { get; set; } = [];

    public int EmbeddingDim { get; set; }

    /// <summary>Output size of each dense layer, the last being the tower's output.</summary>
    public int[] Layers { get; set; } = [];

    /// <summary>Whether the output is scaled to unit L2 length.</summary>
    public bool Normalize { get; set; }
}

public sealed record FileEntry(string Sha256, long Bytes);
