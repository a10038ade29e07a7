using Retrieval.CandidateTower.Extensions;
using Retrieval.CandidateTower.Grpc;
using Retrieval.CandidateTower.Search;
using Retrieval.ServiceDefaults;

var builder = WebApplication.CreateBuilder(args);
builder.AddServiceDefaults(SearchMetrics.MeterName);
builder.AddCandidateTower();

var app = builder.Build();
app.MapGrpcService<CandidateTowerService>();
app.MapServiceDefaults();
app.Run();
