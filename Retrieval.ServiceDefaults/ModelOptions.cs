using System.ComponentModel.DataAnnotations;

namespace Retrieval.ServiceDefaults;

/// <summary>Where the published models are and how versions roll over (section "Model").</summary>
public sealed class ModelOptions
{
    public const string Section = "Model";

    /// <summary>The models folder the trainer publishes into (it holds the <c>current</c> pointer).</summary>
    [Required(AllowEmptyStrings = false)]
    public string Directory { get; set; } = "models";

    /// <summary>How long a previous version keeps answering queries that name it after a new one is current.</summary>
    [Range(0, 86_400)]
    public double GracePeriodSeconds { get; set; } = 60;

    /// <summary>How often the pointer is checked besides file-system events.</summary>
    [Range(0.05, 3_600)]
    public double PollIntervalSeconds { get; set; } = 2;
}
